package membership

import "fmt"

// Keys rotate in three steps, each done on every node before the next:
//
//  1. InstallKey(new) — every node can now decrypt with it;
//  2. UseKey(new)     — every node encrypts with it;
//  3. RemoveKey(old)  — the old key is gone.
//
// A node only decrypts with keys it has, so skipping a step on one node
// cuts it off until the step is done. Rotation requires that the cluster
// was started with SecretKeys: encryption cannot be turned on later.

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
	return nil
}

// RemoveKey forgets a key. The key in use cannot be removed.
func (c *Cluster) RemoveKey(key []byte) error {
	kr := c.keyring
	if kr == nil {
		return errNoKeyring
	}
	if err := kr.RemoveKey(key); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
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
