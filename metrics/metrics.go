package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/troupe-go/troupe"
	"github.com/troupe-go/troupe/membership"
	"github.com/troupe-go/troupe/naming"
	"github.com/troupe-go/troupe/replication"
	"github.com/troupe-go/troupe/replication/pins"
)

// Collector exports one troupe.Node's statistics to Prometheus. It reads
// the node's Stats snapshots when it is collected, and holds no state of
// its own. Make it with New and register it on a registry of your own.
type Collector struct {
	node       *troupe.Node
	membership group[membership.Stats]
	naming     group[naming.Stats]
	sessions   group[replication.Stats]
	pins       group[pins.Stats]
	saveDur    *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// New returns a Collector for node. Every metric carries the constant
// label node="<node.Name()>", so that several nodes of one process can
// share a registry. A client node (troupe.Config.Client) has no sessions
// and no pins, and exports none of their metrics.
func New(node *troupe.Node) *Collector {
	labels := prometheus.Labels{"node": node.Name()}
	return &Collector{
		node:       node,
		membership: newGroup(labels, membershipSpecs),
		naming:     newGroup(labels, namingSpecs),
		sessions:   newGroup(labels, sessionSpecs),
		pins:       newGroup(labels, pinSpecs),
		saveDur: prometheus.NewDesc(prefix+"session_save_duration_seconds",
			"How long Sessions.Save calls took, successful or not.", nil, labels),
	}
}

// Describe implements prometheus.Collector: it sends every metric the
// Collector may export.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	c.membership.describe(ch)
	c.naming.describe(ch)
	c.sessions.describe(ch)
	c.pins.describe(ch)
	ch <- c.saveDur
}

// Collect implements prometheus.Collector: it takes a snapshot of each
// part's Stats and sends them as constant metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.membership.collect(ch, c.node.Cluster().Stats())
	c.naming.collect(ch, c.node.Names().Stats())
	if s := c.node.Sessions(); s != nil {
		st := s.Stats()
		c.sessions.collect(ch, st)
		ch <- histogram(c.saveDur, st.SaveLatency)
	}
	if p := c.node.Pins(); p != nil {
		c.pins.collect(ch, p.Stats())
	}
}

// histogram converts a latency histogram to Prometheus's: cumulative
// buckets in seconds.
func histogram(desc *prometheus.Desc, h replication.Histogram) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Bounds))
	var cum uint64
	for i, b := range h.Bounds {
		cum += h.Counts[i]
		buckets[b.Seconds()] = cum
	}
	m, err := prometheus.NewConstHistogram(desc, h.Count(), h.Sum.Seconds(), buckets)
	if err != nil {
		return prometheus.NewInvalidMetric(desc, err)
	}
	return m
}

const prefix = "troupe_"

// spec is one metric family read from a Stats snapshot of type S: a
// single value, or one value for each value of its one variable label.
type spec[S any] struct {
	name, help string
	typ        prometheus.ValueType
	label      string // the variable label, or ""
	values     func(S) []value
}

type value struct {
	label string // the variable label's value, if the spec has one
	v     float64
}

// one is the value of a metric without a variable label.
func one[N uint64 | int | int64](n N) []value { return []value{{v: float64(n)}} }

// group is the specs of one part of the node, with their descriptions.
type group[S any] struct {
	specs []spec[S]
	descs []*prometheus.Desc
}

func newGroup[S any](labels prometheus.Labels, specs []spec[S]) group[S] {
	g := group[S]{specs: specs, descs: make([]*prometheus.Desc, len(specs))}
	for i, s := range specs {
		var vars []string
		if s.label != "" {
			vars = []string{s.label}
		}
		g.descs[i] = prometheus.NewDesc(prefix+s.name, s.help, vars, labels)
	}
	return g
}

func (g group[S]) describe(ch chan<- *prometheus.Desc) {
	for _, d := range g.descs {
		ch <- d
	}
}

func (g group[S]) collect(ch chan<- prometheus.Metric, st S) {
	for i, s := range g.specs {
		for _, v := range s.values(st) {
			ch <- constMetric(g.descs[i], s.typ, v)
		}
	}
}

// constMetric makes one sample; a mistake in a spec shows as an error at
// scrape time, not as a panic.
func constMetric(desc *prometheus.Desc, typ prometheus.ValueType, v value) prometheus.Metric {
	var labels []string
	if v.label != "" {
		labels = []string{v.label}
	}
	m, err := prometheus.NewConstMetric(desc, typ, v.v, labels...)
	if err != nil {
		return prometheus.NewInvalidMetric(desc, err)
	}
	return m
}

const (
	counter = prometheus.CounterValue
	gauge   = prometheus.GaugeValue
)

// directions is a value for each direction of traffic.
func directions(sent, received uint64) []value {
	return []value{{"sent", float64(sent)}, {"received", float64(received)}}
}

// The metric families, in the order of doc.go's list.

var membershipSpecs = []spec[membership.Stats]{
	{name: "members", typ: gauge, label: "state",
		help: "Members by state as this node sees them: alive (the node included), suspect, failed (declared failed and not back).",
		values: func(s membership.Stats) []value {
			return []value{{"alive", float64(s.Alive)}, {"suspect", float64(s.Suspect)}, {"failed", float64(s.Failed)}}
		}},
	{name: "gossip_messages_total", typ: counter, label: "direction",
		help:   "Channel broadcasts carried by memberlist's gossip packets, each copy sent or received.",
		values: func(s membership.Stats) []value { return directions(s.GossipSent, s.GossipReceived) }},
	{name: "gossip_bytes_total", typ: counter, label: "direction",
		help:   "Bytes of troupe_gossip_messages_total.",
		values: func(s membership.Stats) []value { return directions(s.GossipBytesSent, s.GossipBytesReceived) }},
	{name: "state_exchanges_total", typ: counter, label: "direction",
		help:   "Shares of memberlist's periodic state exchange (push/pull) sent or received.",
		values: func(s membership.Stats) []value { return directions(s.StateSent, s.StateReceived) }},
	{name: "state_exchange_bytes_total", typ: counter, label: "direction",
		help:   "Bytes of troupe_state_exchanges_total.",
		values: func(s membership.Stats) []value { return directions(s.StateBytesSent, s.StateBytesReceived) }},
	{name: "channel_messages_total", typ: counter, label: "direction",
		help:   "Direct messages and calls over the node's transport, sent or received.",
		values: func(s membership.Stats) []value { return directions(s.ChannelSent, s.ChannelReceived) }},
	{name: "channel_bytes_total", typ: counter, label: "direction",
		help:   "Bytes of troupe_channel_messages_total and of the calls' answers, in the direction they travel.",
		values: func(s membership.Stats) []value { return directions(s.ChannelBytesSent, s.ChannelBytesReceived) }},
	{name: "gossip_relayed_total", typ: counter,
		help:   "Broadcasts relayed on first receipt.",
		values: func(s membership.Stats) []value { return one(s.Relayed) }},
	{name: "gossip_duplicates_total", typ: counter,
		help:   "Broadcasts heard again and not relayed.",
		values: func(s membership.Stats) []value { return one(s.Duplicates) }},
	{name: "membership_dropped_total", typ: counter, label: "reason",
		help: "What membership dropped, by reason: malformed, unknown_channel, queue_full (oldest broadcasts of a full gossip queue), bad_meta (members with unreadable metadata), state_too_large (channel shares left out of a state exchange).",
		values: func(s membership.Stats) []value {
			return []value{{"malformed", float64(s.Malformed)}, {"unknown_channel", float64(s.UnknownChannel)},
				{"queue_full", float64(s.QueueDropped)}, {"bad_meta", float64(s.BadMeta)}, {"state_too_large", float64(s.StateTooLarge)}}
		}},
	{name: "membership_name_conflicts_total", typ: counter,
		help:   "Nodes that tried to join with a live member's name.",
		values: func(s membership.Stats) []value { return one(s.NameConflicts) }},
	{name: "membership_join_attempts_total", typ: counter,
		help:   "Discovery join attempts.",
		values: func(s membership.Stats) []value { return one(s.JoinAttempts) }},
	{name: "membership_join_failures_total", typ: counter,
		help:   "Discovery join attempts that reached nobody.",
		values: func(s membership.Stats) []value { return one(s.JoinFailures) }},
	{name: "multicast_sent_total", typ: counter,
		help:   "Multicast announcements sent.",
		values: func(s membership.Stats) []value { return one(s.Multicast.Sent) }},
	{name: "multicast_send_errors_total", typ: counter,
		help:   "Multicast announcements that could not be encoded or sent.",
		values: func(s membership.Stats) []value { return one(s.Multicast.SendErrors) }},
	{name: "multicast_received_total", typ: counter, label: "outcome",
		help: "Multicast datagrams heard, by outcome: accepted, or dropped as partitioned, malformed, foreign, forged, self, stale or replayed.",
		values: func(s membership.Stats) []value {
			m := s.Multicast
			return []value{{"accepted", float64(m.Accepted)}, {"partitioned", float64(m.Partitioned)},
				{"malformed", float64(m.Malformed)}, {"foreign", float64(m.Foreign)}, {"forged", float64(m.Forged)},
				{"self", float64(m.Self)}, {"stale", float64(m.Stale)}, {"replayed", float64(m.Replayed)}}
		}},
}

var namingSpecs = []spec[naming.Stats]{
	{name: "naming_bindings", typ: gauge,
		help:   "Names bound in this node's copy of the naming tree.",
		values: func(s naming.Stats) []value { return one(s.Bindings) }},
	{name: "naming_records", typ: gauge,
		help:   "Records in this node's copy: offers, cluster-scoped bindings, tombstones.",
		values: func(s naming.Stats) []value { return one(s.Records) }},
	{name: "naming_bytes", typ: gauge,
		help:   "Bytes of the records' names and values.",
		values: func(s naming.Stats) []value { return one(s.Bytes) }},
	{name: "naming_conflicts_total", typ: counter,
		help:   "Bindings of this node that lost a concurrent bind.",
		values: func(s naming.Stats) []value { return one(s.Conflicts) }},
	{name: "naming_dropped_total", typ: counter, label: "reason",
		help: "What the naming tree dropped, by reason: malformed, foreign (another protocol version), oversized (value over MaxValueSize), stale (old incarnation, departed node, abandoned fetch), queue_full, rejected (MaxBindings/MaxTreeBytes), over_quota (MaxMemberBindings/MaxMemberBytes).",
		values: func(s naming.Stats) []value {
			return []value{{"malformed", float64(s.Malformed)}, {"foreign", float64(s.Foreign)}, {"oversized", float64(s.Oversized)},
				{"stale", float64(s.Stale)}, {"queue_full", float64(s.Dropped)}, {"rejected", float64(s.Rejected)}, {"over_quota", float64(s.OverQuota)}}
		}},
	{name: "naming_broadcasts_total", typ: counter,
		help:   "Naming gossip messages sent.",
		values: func(s naming.Stats) []value { return one(s.Broadcasts) }},
	{name: "naming_fetches_total", typ: counter,
		help:   "Anti-entropy fetches requested.",
		values: func(s naming.Stats) []value { return one(s.Fetches) }},
	{name: "naming_fetches_served_total", typ: counter,
		help:   "Anti-entropy fetches answered.",
		values: func(s naming.Stats) []value { return one(s.Served) }},
	{name: "naming_send_errors_total", typ: counter,
		help:   "Naming direct messages or broadcasts that failed.",
		values: func(s naming.Stats) []value { return one(s.SendErrors) }},
	{name: "naming_message_bytes_total", typ: counter, label: "direction",
		help:   "Bytes of naming direct messages sent, and of digests and fetched data received.",
		values: func(s naming.Stats) []value { return directions(s.BytesOut, s.BytesIn) }},
}

var sessionSpecs = []spec[replication.Stats]{
	{name: "sessions", typ: gauge, label: "role",
		help: "Sessions held here: primary (served by this node), secondary (copies kept for other primaries).",
		values: func(s replication.Stats) []value {
			return []value{{"primary", float64(s.Primaries)}, {"secondary", float64(s.Secondaries)}}
		}},
	{name: "sessions_created_total", typ: counter,
		help:   "Sessions created on this node.",
		values: func(s replication.Stats) []value { return one(s.Created) }},
	{name: "session_saves_total", typ: counter,
		help:   "Saves that changed something.",
		values: func(s replication.Stats) []value { return one(s.Saves) }},
	{name: "session_full_copies_total", typ: counter,
		help:   "Full session copies sent to a secondary (new secondary, gap, repair).",
		values: func(s replication.Stats) []value { return one(s.FullCopies) }},
	{name: "session_failovers_total", typ: counter, label: "kind",
		help: "Failovers by kind: promotion (a secondary copy promoted, its primary failed), takeover (a session taken from another node on Get), rehome (a new secondary for a session whose secondary failed or was missing).",
		values: func(s replication.Stats) []value {
			return []value{{"promotion", float64(s.Promotions)}, {"takeover", float64(s.Takeovers)}, {"rehome", float64(s.Rehomes)}}
		}},
	{name: "sessions_expired_total", typ: counter,
		help:   "Session copies removed for idleness, either role.",
		values: func(s replication.Stats) []value { return one(s.Expired) }},
	{name: "sessions_invalidated_total", typ: counter,
		help:   "Sessions invalidated.",
		values: func(s replication.Stats) []value { return one(s.Invalidated) }},
	{name: "session_stale_drops_total", typ: counter,
		help:   "Session copies dropped because another node held a newer one.",
		values: func(s replication.Stats) []value { return one(s.StaleDrops) }},
	{name: "session_refused_total", typ: counter,
		help:   "Peers' session requests refused (not a live session node, a forged sender, over MaxSessionSize).",
		values: func(s replication.Stats) []value { return one(s.Refused) }},
}

var pinSpecs = []spec[pins.Stats]{
	{name: "pins_held", typ: gauge,
		help:   "Pins this node claimed and has not released.",
		values: func(s pins.Stats) []value { return one(s.Held) }},
	{name: "pin_claims_total", typ: counter,
		help:   "Pin claims this node won.",
		values: func(s pins.Stats) []value { return one(s.Claims) }},
	{name: "pin_releases_total", typ: counter,
		help:   "Pins this node gave up: Release, Leave, or a lost quorum.",
		values: func(s pins.Stats) []value { return one(s.Releases) }},
	{name: "singletons_running", typ: gauge,
		help:   "Singleton services whose function runs on this node now.",
		values: func(s pins.Stats) []value { return one(s.SingletonsRunning) }},
	{name: "singleton_starts_total", typ: counter,
		help:   "Singleton functions started on this node (a move here, or a restart).",
		values: func(s pins.Stats) []value { return one(s.SingletonStarts) }},
	{name: "singleton_stops_total", typ: counter,
		help:   "Singleton functions that stopped on this node (a move away, Stop, Leave, a lost quorum, or a return).",
		values: func(s pins.Stats) []value { return one(s.SingletonStops) }},
}
