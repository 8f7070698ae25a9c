package naming

import (
	"fmt"
	"strings"
	"unsafe"
)

// Limits on names, enforced by every call that takes a name.
const (
	// MaxNameLen is the longest name in bytes, after normalisation.
	MaxNameLen = 512
	// MaxSegmentLen is the longest segment between two slashes.
	MaxSegmentLen = 128
	// MaxDepth is the largest number of segments.
	MaxDepth = 32
)

// NormalizeName returns the canonical form of a name: one leading and one
// trailing slash are removed ("/ejb/Orders/" is "ejb/Orders"); nothing
// else changes (names are case-sensitive). It fails with ErrInvalidName
// for an empty name, an empty, "." or ".." segment, a character outside
// [A-Za-z0-9._~:@+=,!$*-], or a name over the limits above. The result
// is a substring of name: normalising does not allocate.
func NormalizeName(name string) (string, error) {
	n, err := normalize(name, false)
	return n, err
}

// normalize checks and canonicalises a name; with prefix set, the empty
// name (the root) is valid.
func normalize(s string, prefix bool) (string, error) {
	// Errors quote a copy of the name, so that the name itself does not
	// escape: a caller may pass a name built on its stack (Lookup does not
	// allocate).
	o := s
	orig := func() string { return strings.Clone(o) }
	if len(s) > 0 && s[0] == '/' {
		s = s[1:]
	}
	if len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	if s == "" {
		if prefix {
			return "", nil
		}
		return "", fmt.Errorf("%w: empty name", ErrInvalidName)
	}
	if len(s) > MaxNameLen {
		return "", fmt.Errorf("%w: %d bytes, the limit is %d", ErrInvalidName, len(s), MaxNameLen)
	}
	depth, start := 1, 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '/' {
			if !nameChar[s[i]] {
				return "", fmt.Errorf("%w: %q has the character %q at byte %d; allowed are letters, digits and ._~:@+=,!$*-", ErrInvalidName, orig(), s[i], i)
			}
			continue
		}
		seg := s[start:i]
		switch {
		case seg == "":
			return "", fmt.Errorf("%w: %q has an empty segment", ErrInvalidName, orig())
		case seg == "." || seg == "..":
			return "", fmt.Errorf("%w: %q has a %q segment; names are not paths to resolve", ErrInvalidName, orig(), strings.Clone(seg))
		case len(seg) > MaxSegmentLen:
			return "", fmt.Errorf("%w: segment %q… is %d bytes, the limit is %d", ErrInvalidName, strings.Clone(seg[:16]), len(seg), MaxSegmentLen)
		}
		if i < len(s) {
			depth++
			if depth > MaxDepth {
				return "", fmt.Errorf("%w: %q has more than %d segments", ErrInvalidName, orig(), MaxDepth)
			}
		}
		start = i + 1
	}
	return s, nil
}

var nameChar = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "._~:@+=,!$*-" {
		t[c] = true
	}
	return t
}()

// under reports whether name is prefix itself or below it.
func under(name, prefix string) bool {
	if prefix == "" {
		return true
	}
	if len(name) < len(prefix) || name[:len(prefix)] != prefix {
		return false
	}
	return len(name) == len(prefix) || name[len(prefix)] == '/'
}

// keyOf views a string as a []byte key for the radix tree without copying
// it. Its one use is Txn.Delete in recompute: Delete only reads the key
// while it walks down the tree and keeps no reference to it. Insert must
// not be given such a view, because the tree keeps an inserted key in its
// leaf (recompute passes a copy, []byte(name)). The bytes are the
// string's and must never be written.
func keyOf(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
