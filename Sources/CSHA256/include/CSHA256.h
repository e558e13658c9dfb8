#ifndef FEEDARCHIVE_CSHA256_H
#define FEEDARCHIVE_CSHA256_H

#include <stddef.h>
#include <stdint.h>

/// SHA-256's 64 round constants.
extern const uint32_t feedarchive_sha256_k[64];

/// 1 when this processor has the SHA extensions (x86-64 SHA-NI with SSE4.1), else 0.
int feedarchive_sha256_hardware(void);

/// Compresses `blocks` 64-byte blocks of `data` into `state` (eight words, a to h) with the
/// SHA extensions. Only to be called when `feedarchive_sha256_hardware()` is 1.
void feedarchive_sha256_blocks(uint32_t state[8], const uint8_t *data, size_t blocks);

#endif
