package naming

// The hashes that let two nodes compare their copies without sending
// them. An owner's hash is the XOR of recHash over its records and the
// cluster-scoped records are XORed into numBuckets bucket hashes, so that
// storing or removing a record updates a hash in constant time, and equal
// hashes mean equal records (up to a collision). These values travel in
// beacons and digests, so every node must compute them alike: they are
// written out here (FNV-1a and the splitmix64 finaliser) rather than
// taken from hash/maphash, whose seed differs per process; index.go uses
// maphash because its hashes never leave the process.

func strHash(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func recHash(name string, ver uint64) uint64 { return mix(strHash(name) ^ mix(ver)) }

func crecHash(r *crec) uint64 {
	h := strHash(r.name) ^ mix(r.ts) ^ mix(strHash(r.writer)+1)
	if r.deleted {
		h ^= 0x9e3779b97f4a7c15
	}
	return mix(h)
}

func bucketOf(name string) int { return int(strHash(name) % numBuckets) }
