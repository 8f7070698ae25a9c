package membership

// MulticastStats counts multicast announcements.
type MulticastStats struct{}

func startMulticast(c *Cluster) (multicaster, error) { return nil, nil }
