module shoal

go 1.23
