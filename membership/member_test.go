package membership

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/troupe-go/troupe/internal/wire"
)

// metaSeeds returns member metadata as nodes send it, and some that no
// node sends, by name.
func metaSeeds(t testing.TB) map[string][]byte {
	enc := func(m Meta, addr string) []byte {
		b, err := encodeMeta(m, addr)
		require.NoError(t, err)
		return b
	}
	raw := func(v any) []byte {
		b, err := wire.Marshal(v)
		require.NoError(t, err)
		return b
	}
	full := Meta{Role: "worker", Group: "rack-1", Weight: 3, Tags: map[string]string{"http": "10.0.0.5:8080", "zone": "a"}}
	return map[string][]byte{
		"empty":            enc(Meta{}, ""),
		"full":             enc(full, "10.0.0.5:7947"),
		"ipv6":             enc(Meta{Role: "manager"}, "[fe80::1]:7947"),
		"largest":          enc(Meta{Tags: map[string]string{"t": strings.Repeat("x", MetaMaxSize-40)}}, "10.0.0.5:1"),
		"future-version":   raw(map[string]any{"v": 9, "r": "worker", "x": []int{1, 2}}),
		"negative-weight":  raw(metaWire{V: metaVersion, W: -5}),
		"tags-not-strings": raw(map[string]any{"v": 1, "t": map[string]int{"a": 1}}),
		"not-a-map":        raw([]string{"worker"}),
		"huge-map-len":     {0xdf, 0xff, 0xff, 0xff, 0xff},
		"huge-str-len":     {0x81, 0xa1, 'r', 0xdb, 0xff, 0xff, 0xff, 0xff},
		"truncated":        enc(full, "10.0.0.5:7947")[:20],
	}
}

// decodeAllocBound is the most that decoding b may allocate: in
// proportion to b, plus a constant for what go-msgpack sizes up front on
// a length claim before it finds the bytes missing (up to 256 KiB per
// container, about 390 KiB for a map of strings; internal/wire does not
// set MaxInitLen).
func decodeAllocBound(b []byte) uint64 { return 1<<20 + 128*uint64(len(b)) }

// FuzzDecodeMeta feeds arbitrary bytes to the metadata decoder, as a
// member's gossip or push/pull state could carry them. It must never
// panic, must allocate in proportion to the input whatever lengths it
// claims, and metadata it reads must survive encoding and decoding again.
func FuzzDecodeMeta(f *testing.F) {
	for _, b := range metaSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		m, addr, err := decodeMeta(b)
		runtime.ReadMemStats(&after)
		if n, bound := after.TotalAlloc-before.TotalAlloc, decodeAllocBound(b); n > bound {
			t.Fatalf("decoding %d bytes allocated %d, bound %d", len(b), n, bound)
		}
		if err != nil {
			require.Zero(t, m, "a failed decode returns no metadata")
			require.Empty(t, addr)
			return
		}
		again, err := encodeMeta(m, addr)
		if err != nil {
			require.ErrorIs(t, err, ErrMetaTooLarge, "only the size limit refuses what was read")
			return
		}
		m2, addr2, err := decodeMeta(again)
		require.NoError(t, err)
		require.Equal(t, addr, addr2)
		require.Equal(t, m.Role, m2.Role)
		require.Equal(t, m.Group, m2.Group)
		require.Equal(t, m.Weight, m2.Weight)
		require.True(t, maps.Equal(m.Tags, m2.Tags), "tags %v became %v", m.Tags, m2.Tags)
	})
}

func TestDecodeMetaSeeds(t *testing.T) {
	seeds := metaSeeds(t)
	m, addr, err := decodeMeta(seeds["full"])
	require.NoError(t, err)
	require.Equal(t, "10.0.0.5:7947", addr)
	require.Equal(t, Meta{Role: "worker", Group: "rack-1", Weight: 3, Tags: map[string]string{"http": "10.0.0.5:8080", "zone": "a"}}, m)
	m, _, err = decodeMeta(seeds["future-version"])
	require.NoError(t, err, "a later version's fields are ignored")
	require.Equal(t, "worker", m.Role)
	for _, name := range []string{"not-a-map", "huge-map-len", "huge-str-len", "truncated", "tags-not-strings"} {
		_, _, err := decodeMeta(seeds[name])
		require.Error(t, err, name)
	}
}

// TestWriteMembershipCorpus regenerates testdata/fuzz for FuzzDecodeMeta
// and FuzzMergeRemoteState when MEMBERSHIP_WRITE_CORPUS=1.
func TestWriteMembershipCorpus(t *testing.T) {
	if os.Getenv("MEMBERSHIP_WRITE_CORPUS") != "1" {
		t.Skip("set MEMBERSHIP_WRITE_CORPUS=1 to regenerate the seed corpus")
	}
	for target, seeds := range map[string]map[string][]byte{
		"FuzzDecodeMeta":       metaSeeds(t),
		"FuzzMergeRemoteState": stateSeeds(t),
	} {
		dir := filepath.Join("testdata", "fuzz", target)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		for name, b := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
			require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644))
		}
	}
}
