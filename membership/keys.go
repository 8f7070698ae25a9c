package membership

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
)

// Keys rotate in three steps, each done on every node before the next:
//
//  1. InstallKey(new) — every node can now decrypt with it;
//  2. UseKey(new)     — every node encrypts with it;
//  3. RemoveKey(old)  — the old key is gone.
//
// A node only decrypts with keys it has, so skipping a step on one node
// cuts it off until the step is done. Rotation requires that the cluster
// was started with SecretKeys: encryption cannot be turned on later.
//
// The transport follows each step at once: every handshake reads the
// keyring, so new connections use the keys of the moment. UseKey moves
// this node's own connections to the new key (new calls dial with it;
// the old connections close when their calls are done), and RemoveKey
// closes every connection still made with the removed key, in both
// directions, failing the calls in flight on it (ErrUnreachable). So
// after step 3 on every node the old key carries nothing, and no call of
// the members fails if each step is done everywhere before the next.

var errNoKeyring = fmt.Errorf("%w: the node was started without SecretKeys; encryption cannot be enabled at run time", ErrInvalidConfig)

// InstallKey adds a key that the node accepts but does not yet encrypt
// with.
func (c *Cluster) InstallKey(key []byte) error {
	kr := c.keyring
	if kr == nil {
		return errNoKeyring
	}
	if err := kr.AddKey(key); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	return nil
}

// UseKey makes an installed key the one the node encrypts with.
func (c *Cluster) UseKey(key []byte) error {
	kr := c.keyring
	if kr == nil {
		return errNoKeyring
	}
	if err := kr.UseKey(key); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	c.calls.KeysChanged()
	return nil
}

// RemoveKey forgets a key and closes the transport's connections made
// with it. The key in use cannot be removed.
func (c *Cluster) RemoveKey(key []byte) error {
	kr := c.keyring
	if kr == nil {
		return errNoKeyring
	}
	if err := kr.RemoveKey(key); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	c.calls.KeysChanged()
	return nil
}

// Keys returns the installed keys, the one in use first, or nil when the
// cluster is not encrypted. Upper layers authenticate their own traffic
// with them.
func (c *Cluster) Keys() [][]byte {
	kr := c.keyring
	if kr == nil {
		return nil
	}
	return kr.GetKeys()
}

// GenerateKey returns a new random 32-byte cluster key (AES-256). Give
// the same key to every node, for instance as the base64 text that
// "head -c 32 /dev/urandom | base64" prints, read back with DecodeKey.
func GenerateKey() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k) // crypto/rand.Read never fails since Go 1.24
	return k
}

// DecodeKey reads a cluster key written in base64 (standard or URL
// alphabet, padded or not; surrounding space ignored), as a key file or
// an environment variable holds it. The key must decode to 16, 24 or 32
// bytes.
func DecodeKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		k, err := enc.DecodeString(s)
		if err != nil {
			continue
		}
		switch len(k) {
		case 16, 24, 32:
			return k, nil
		}
		return nil, fmt.Errorf("%w: a cluster key is 16, 24 or 32 bytes, this one is %d", ErrInvalidConfig, len(k))
	}
	return nil, fmt.Errorf("%w: a cluster key is base64 text (make one with: head -c 32 /dev/urandom | base64)", ErrInvalidConfig)
}
