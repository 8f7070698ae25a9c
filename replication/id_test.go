package replication

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseIDRoundTrip(t *testing.T) {
	key := newKey()
	a, b := NodeID("node-a"), NodeID("node-b")
	for _, id := range []ID{{key, a, b}, {key, a, ""}} {
		got, err := ParseID(id.String())
		require.NoError(t, err)
		require.Equal(t, id, got)
	}
	require.Equal(t, key+"!"+a+"!none", ID{key, a, ""}.String())
}

func TestParseIDRejectsMalformed(t *testing.T) {
	key := newKey()
	a, b := NodeID("node-a"), NodeID("node-b")
	bad := map[string]string{
		"empty":               "",
		"key only":            key,
		"no secondary":        key + "!" + a,
		"four parts":          key + "!" + a + "!" + b + "!" + b,
		"short key":           key[1:] + "!" + a + "!" + b,
		"long key":            key + "a!" + a + "!" + b,
		"upper case key":      strings.ToUpper(key) + "!" + a + "!" + b,
		"non-canonical key":   key[:25] + "7!" + a + "!" + b, // trailing bits set
		"bad char in key":     "0" + key[1:] + "!" + a + "!" + b,
		"short node":          key + "!" + a[1:] + "!" + b,
		"bad char in node":    key + "!" + "abcde1" + "!" + b,
		"none as primary":     key + "!none!" + b,
		"empty secondary":     key + "!" + a + "!",
		"same nodes":          key + "!" + a + "!" + a,
		"spaces":              " " + key + "!" + a + "!" + b,
		"way too long":        strings.Repeat("a", 10000),
		"separators only":     "!!",
		"unicode":             key + "!" + "ñodeid" + "!" + b,
		"secondary uppercase": key + "!" + a + "!NONE",
	}
	for name, s := range bad {
		t.Run(name, func(t *testing.T) {
			_, err := ParseID(s)
			require.ErrorIs(t, err, ErrInvalidID)
		})
	}
}

func TestNodeIDStable(t *testing.T) {
	require.Equal(t, NodeID("node-0"), NodeID("node-0"))
	require.NotEqual(t, NodeID("node-0"), NodeID("node-1"))
	require.True(t, validNodeID(NodeID("anything at all")))
	// The id is a function of the name only: pinned, so that a change
	// that would break routes across an upgrade shows up here.
	require.Equal(t, "prwmih", NodeID("node-0"))
}

func TestNewKeyUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		k := newKey()
		require.True(t, validKey(k))
		require.False(t, seen[k])
		seen[k] = true
	}
}

// FuzzParseID checks that ParseID never panics and accepts only ids that
// print back to themselves.
func FuzzParseID(f *testing.F) {
	key := newKey()
	a, b := NodeID("node-a"), NodeID("node-b")
	f.Add(key + "!" + a + "!" + b)
	f.Add(key + "!" + a + "!none")
	f.Add("!!")
	f.Add(key + "!" + a)
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err != nil {
			require.ErrorIs(t, err, ErrInvalidID)
			return
		}
		require.Equal(t, s, id.String())
	})
}
