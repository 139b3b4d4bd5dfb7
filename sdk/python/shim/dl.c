/* libpython3.11.a refers to dlopen/dlsym/dlerror (extension modules loaded
 * from files), which Debian's wasi-libc (2022) lacks. A Python guest has
 * every extension module built in, so loading one from a file fails, with
 * this message. */
#include <stddef.h>

void *dlopen(const char *file, int mode) {
    (void)file;
    (void)mode;
    return NULL;
}

void *dlsym(void *handle, const char *name) {
    (void)handle;
    (void)name;
    return NULL;
}

char *dlerror(void) {
    return (char *)"a Python guest cannot load extension modules from files";
}
