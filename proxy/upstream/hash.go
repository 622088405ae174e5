package upstream

import (
	"encoding/binary"
	"math/bits"
)

// xxHash64 primes.
const (
	xxP1 uint64 = 11400714785074694791
	xxP2 uint64 = 14029467366897019727
	xxP3 uint64 = 1609587929392839161
	xxP4 uint64 = 9650029242287828579
	xxP5 uint64 = 2870177450012600261
)

func xxRound(acc, in uint64) uint64 {
	acc += in * xxP2
	acc = bits.RotateLeft64(acc, 31)
	return acc * xxP1
}

func xxMerge(acc, v uint64) uint64 {
	acc ^= xxRound(0, v)
	return acc*xxP1 + xxP4
}

// XXHash64 is xxHash64 of s with seed (Envoy's HashUtil::xxHash64, used for
// ring hash and Maglev host keys and the header/cookie hash policies).
func XXHash64(s string, seed uint64) uint64 {
	b := []byte(s) // does not escape: the compiler keeps it on the stack for short keys
	return xxh64(b, seed)
}

func xxh64(b []byte, seed uint64) uint64 {
	n := len(b)
	var h uint64
	if n >= 32 {
		v1, v2, v3, v4 := seed+xxP1+xxP2, seed+xxP2, seed, seed-xxP1
		for len(b) >= 32 {
			v1 = xxRound(v1, binary.LittleEndian.Uint64(b[0:8]))
			v2 = xxRound(v2, binary.LittleEndian.Uint64(b[8:16]))
			v3 = xxRound(v3, binary.LittleEndian.Uint64(b[16:24]))
			v4 = xxRound(v4, binary.LittleEndian.Uint64(b[24:32]))
			b = b[32:]
		}
		h = bits.RotateLeft64(v1, 1) + bits.RotateLeft64(v2, 7) + bits.RotateLeft64(v3, 12) + bits.RotateLeft64(v4, 18)
		h = xxMerge(h, v1)
		h = xxMerge(h, v2)
		h = xxMerge(h, v3)
		h = xxMerge(h, v4)
	} else {
		h = seed + xxP5
	}
	h += uint64(n)
	for ; len(b) >= 8; b = b[8:] {
		h ^= xxRound(0, binary.LittleEndian.Uint64(b))
		h = bits.RotateLeft64(h, 27)*xxP1 + xxP4
	}
	if len(b) >= 4 {
		h ^= uint64(binary.LittleEndian.Uint32(b)) * xxP1
		h = bits.RotateLeft64(h, 23)*xxP2 + xxP3
		b = b[4:]
	}
	for ; len(b) > 0; b = b[1:] {
		h ^= uint64(b[0]) * xxP5
		h = bits.RotateLeft64(h, 11) * xxP1
	}
	h ^= h >> 33
	h *= xxP2
	h ^= h >> 29
	h *= xxP3
	h ^= h >> 32
	return h
}

// murmurStdSeed is libstdc++'s std::hash seed (Envoy's MurmurHash::STD_HASH_SEED).
const murmurStdSeed uint64 = 0xc70f6907

// murmurHash2 is the 64-bit MurmurHash2 variant of libstdc++'s _Hash_bytes
// (Envoy's MurmurHash::murmurHash2), used by ring hash's MURMUR_HASH_2.
func murmurHash2(s string, seed uint64) uint64 {
	const mul uint64 = 0xc6a4a7935bd1e995
	shift := func(v uint64) uint64 { return v ^ (v >> 47) }
	n := len(s)
	h := seed ^ (uint64(n) * mul)
	i := 0
	for ; i+8 <= n; i += 8 {
		var v uint64
		for j := 7; j >= 0; j-- {
			v = v<<8 | uint64(s[i+j])
		}
		h ^= shift(v*mul) * mul
		h *= mul
	}
	if rem := n - i; rem != 0 {
		var v uint64
		for j := rem - 1; j >= 0; j-- {
			v = v<<8 | uint64(s[i+j])
		}
		h ^= v
		h *= mul
	}
	h = shift(h) * mul
	return shift(h)
}
