//go:build solaris

package multicast

// setReusePort does nothing: SO_REUSEADDR alone shares a multicast port on
// Solaris and illumos.
func setReusePort(int) {}
