;; The block checksum: XXH64 (seed 0) of each block of a buffer, kept as its low 32 bits.
;; Source of core/store/block_checksum_wasm.ts (scripts/gen_block_checksum_wasm.ts assembles
;; it with binaryen, which inlines the small functions below: without that V8 runs it 4x slower).
;; The XXH64 steps and constants are those of the reference, xxhash.h (Yann Collet, BSD-2).
(module
  ;; 0 .. 64 KiB: checksums out; 64 KiB .. 64 KiB + 1 MiB: bytes in (block_checksum.ts keeps
  ;; the same numbers as SCRATCH_AT and SCRATCH_BYTES).
  (memory (export "memory") 17)

  (func $round (param $acc i64) (param $input i64) (result i64)
    (i64.mul
      (i64.rotl
        (i64.add (local.get $acc) (i64.mul (local.get $input) (i64.const 0xC2B2AE3D27D4EB4F)))
        (i64.const 31))
      (i64.const 0x9E3779B185EBCA87)))

  (func $merge (param $h i64) (param $v i64) (result i64)
    (i64.add
      (i64.mul (i64.xor (local.get $h) (call $round (i64.const 0) (local.get $v)))
        (i64.const 0x9E3779B185EBCA87))
      (i64.const 0x85EBCA77C2B2AE63)))

  ;; XXH64 of `len` bytes at `p`.
  (func $xxh64 (param $p i32) (param $len i32) (result i64)
    (local $end i32) (local $h i64)
    (local $v1 i64) (local $v2 i64) (local $v3 i64) (local $v4 i64)
    (local.set $end (i32.add (local.get $p) (local.get $len)))
    (if (i32.ge_u (local.get $len) (i32.const 32))
      (then
        (local.set $v1 (i64.const 0x60EA27EEADC0B5D6)) ;; PRIME64_1 + PRIME64_2
        (local.set $v2 (i64.const 0xC2B2AE3D27D4EB4F)) ;; PRIME64_2
        (local.set $v3 (i64.const 0))
        (local.set $v4 (i64.const 0x61C8864E7A143579)) ;; -PRIME64_1
        (loop $stripes
          (local.set $v1 (call $round (local.get $v1) (i64.load offset=0 (local.get $p))))
          (local.set $v2 (call $round (local.get $v2) (i64.load offset=8 (local.get $p))))
          (local.set $v3 (call $round (local.get $v3) (i64.load offset=16 (local.get $p))))
          (local.set $v4 (call $round (local.get $v4) (i64.load offset=24 (local.get $p))))
          (local.set $p (i32.add (local.get $p) (i32.const 32)))
          (br_if $stripes (i32.le_u (i32.add (local.get $p) (i32.const 32)) (local.get $end))))
        (local.set $h
          (i64.add
            (i64.add (i64.rotl (local.get $v1) (i64.const 1)) (i64.rotl (local.get $v2) (i64.const 7)))
            (i64.add (i64.rotl (local.get $v3) (i64.const 12)) (i64.rotl (local.get $v4) (i64.const 18)))))
        (local.set $h (call $merge (local.get $h) (local.get $v1)))
        (local.set $h (call $merge (local.get $h) (local.get $v2)))
        (local.set $h (call $merge (local.get $h) (local.get $v3)))
        (local.set $h (call $merge (local.get $h) (local.get $v4))))
      (else (local.set $h (i64.const 0x27D4EB2F165667C5)))) ;; PRIME64_5
    (local.set $h (i64.add (local.get $h) (i64.extend_i32_u (local.get $len))))
    (block $words_done
      (loop $words
        (br_if $words_done (i32.gt_u (i32.add (local.get $p) (i32.const 8)) (local.get $end)))
        (local.set $h
          (i64.add
            (i64.mul
              (i64.rotl
                (i64.xor (local.get $h) (call $round (i64.const 0) (i64.load (local.get $p))))
                (i64.const 27))
              (i64.const 0x9E3779B185EBCA87))
            (i64.const 0x85EBCA77C2B2AE63)))
        (local.set $p (i32.add (local.get $p) (i32.const 8)))
        (br $words)))
    (if (i32.le_u (i32.add (local.get $p) (i32.const 4)) (local.get $end))
      (then
        (local.set $h
          (i64.add
            (i64.mul
              (i64.rotl
                (i64.xor (local.get $h)
                  (i64.mul (i64.load32_u (local.get $p)) (i64.const 0x9E3779B185EBCA87)))
                (i64.const 23))
              (i64.const 0xC2B2AE3D27D4EB4F))
            (i64.const 0x165667B19E3779F9)))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))))
    (block $bytes_done
      (loop $bytes
        (br_if $bytes_done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $h
          (i64.mul
            (i64.rotl
              (i64.xor (local.get $h)
                (i64.mul (i64.load8_u (local.get $p)) (i64.const 0x27D4EB2F165667C5)))
              (i64.const 11))
            (i64.const 0x9E3779B185EBCA87)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $bytes)))
    (local.set $h (i64.xor (local.get $h) (i64.shr_u (local.get $h) (i64.const 33))))
    (local.set $h (i64.mul (local.get $h) (i64.const 0xC2B2AE3D27D4EB4F)))
    (local.set $h (i64.xor (local.get $h) (i64.shr_u (local.get $h) (i64.const 29))))
    (local.set $h (i64.mul (local.get $h) (i64.const 0x165667B19E3779F9)))
    (i64.xor (local.get $h) (i64.shr_u (local.get $h) (i64.const 32))))

  ;; The checksum of the `len` bytes at `p`.
  (func (export "checksum") (param $p i32) (param $len i32) (result i32)
    (i32.wrap_i64 (call $xxh64 (local.get $p) (local.get $len))))

  ;; The checksum of each `block`-byte block of the `len` bytes at `p` (the last may be shorter),
  ;; stored as u32s from `out`.
  (func (export "checksums") (param $p i32) (param $len i32) (param $block i32) (param $out i32)
    (local $end i32) (local $n i32)
    (local.set $end (i32.add (local.get $p) (local.get $len)))
    (block $done
      (loop $blocks
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $n (i32.sub (local.get $end) (local.get $p)))
        (if (i32.gt_u (local.get $n) (local.get $block)) (then (local.set $n (local.get $block))))
        (i32.store (local.get $out) (i32.wrap_i64 (call $xxh64 (local.get $p) (local.get $n))))
        (local.set $p (i32.add (local.get $p) (local.get $n)))
        (local.set $out (i32.add (local.get $out) (i32.const 4)))
        (br $blocks))))
)
