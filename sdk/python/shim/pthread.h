/* Debian's wasi-libc (2022) has no pthread.h; CPython's headers only need
 * the key type (the WASI build has no threads). */
#ifndef SHOAL_PYTHON_PTHREAD_SHIM_H
#define SHOAL_PYTHON_PTHREAD_SHIM_H
typedef unsigned pthread_key_t;
#endif
