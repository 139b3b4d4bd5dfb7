// The Go example guests (guests/langs/build.sh builds them into
// go_pingpong.wasm and go_allimports.wasm), over the SDK in sdk/go.
module shoal-guests

go 1.23

require shoal v0.0.0

replace shoal => ../../sdk/go
