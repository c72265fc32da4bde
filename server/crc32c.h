// CRC-32C (Castagnoli, the iSCSI / ext4 / LevelDB checksum): detects torn or
// corrupted on-disk files. Debian's Abseil (20220623) predates absl/crc.
#pragma once

#include <cstdint>

#include "absl/strings/string_view.h"

namespace maskserve::server {

// CRC-32C of `data`, continuing from `crc` (0 to start): reflected polynomial
// 0x82F63B78, initial value and final xor 0xFFFFFFFF, so
// Crc32c("123456789") == 0xE3069283.
uint32_t Crc32c(absl::string_view data, uint32_t crc = 0);

}  // namespace maskserve::server
