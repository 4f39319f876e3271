package transport

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/transport/wire"
)

// Metrics are imsync's Prometheus series, on a registry of their own (so
// that several servers in one process do not collide): the gateway's
// (Config.Metrics), the grains' (Actors), the store's (InstrumentStore,
// WatchStore) and protoactor-go's actor metrics (Actors().MeterProvider).
// docs/operations.md describes every series. A nil *Metrics records
// nothing.
type Metrics struct {
	reg   *prometheus.Registry
	meter *sdkmetric.MeterProvider

	requests        *prometheus.CounterVec   // op, code
	requestSeconds  *prometheus.HistogramVec // op
	sends           *prometheus.CounterVec   // result
	pushes          prometheus.Counter
	pushesCoalesced prometheus.Counter
	syncPages       prometheus.Counter
	syncBytes       prometheus.Counter
	appendSeconds   *prometheus.HistogramVec // stream
	sendToPush      prometheus.Histogram
	fanoutLag       prometheus.Histogram
	refusals        *prometheus.CounterVec // reason
	loginsRefused   *prometheus.CounterVec // reason
	disconnects     *prometheus.CounterVec // reason
}

// latencyBuckets span 100 µs (one fsync) to 10 s.
var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// NewMetrics returns the series on a new registry, with the Go runtime's
// and the process's own collectors, and an OpenTelemetry meter provider
// that exports into the same registry (for protoactor-go).
func NewMetrics() (*Metrics, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo(), otelprom.WithoutTargetInfo())
	if err != nil {
		return nil, err
	}
	m := &Metrics{
		reg:   reg,
		meter: sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp)),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imsync_requests_total", Help: "Requests answered, by operation and result code (ok or the error's name).",
		}, []string{"op", "code"}),
		requestSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "imsync_request_duration_seconds", Help: "Time the server took to compute an answer (a send: until durable), by operation.", Buckets: latencyBuckets,
		}, []string{"op"}),
		sends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imsync_sends_total", Help: "Messages acknowledged to senders: stored (new) or duplicate (a retry of a stored one).",
		}, []string{"result"}),
		pushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imsync_pushes_total", Help: "Notifications written to devices' push streams.",
		}),
		pushesCoalesced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imsync_pushes_coalesced_total", Help: "Notifications dropped for slow devices and replaced by one 'pull from here'.",
		}),
		syncPages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imsync_sync_pages_total", Help: "Sync timeline pages served.",
		}),
		syncBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imsync_sync_page_bytes_total", Help: "Bytes of the sync pages served (as sent, compressed or not).",
		}),
		appendSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "imsync_store_append_duration_seconds", Help: "Durable appends to the event store, by stream kind.", Buckets: latencyBuckets,
		}, []string{"stream"}),
		sendToPush: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "imsync_send_to_push_seconds", Help: "From a message's acceptance by its conversation to its push queued for a receiving device (millisecond clock).", Buckets: latencyBuckets,
		}),
		fanoutLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "imsync_fanout_lag_seconds", Help: "From a conversation event being durable to it being in every member's inbox.", Buckets: latencyBuckets,
		}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imsync_rate_limited_total", Help: "Requests refused with 103 RATE_LIMITED, by reason: rate, read_budget, write_budget.",
		}, []string{"reason"}),
		loginsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imsync_logins_refused_total", Help: "Connections refused before or at login, by reason.",
		}, []string{"reason"}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imsync_disconnects_total", Help: "Device connections ended, by reason.",
		}, []string{"reason"}),
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.requestSeconds, m.sends, m.pushes, m.pushesCoalesced, m.syncPages, m.syncBytes,
		m.appendSeconds, m.sendToPush, m.fanoutLag, m.refusals, m.loginsRefused, m.disconnects)
	return m, nil
}

// Registry is where the series are registered (serve it with promhttp).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Actors returns the hooks for actors.Config.Metrics: protoactor-go's
// actor metrics and the fanout lag.
func (m *Metrics) Actors() actors.Metrics {
	if m == nil {
		return actors.Metrics{}
	}
	return actors.Metrics{MeterProvider: m.meter, FanoutLag: func(d time.Duration) { m.fanoutLag.Observe(d.Seconds()) }}
}

// Close flushes and stops the meter provider.
func (m *Metrics) Close() error {
	if m == nil {
		return nil
	}
	return m.meter.Shutdown(context.Background())
}

// WatchService adds the gauges that svc answers: grains active by kind,
// the fanout backlog and the cluster's members.
func (m *Metrics) WatchService(svc *actors.Service) {
	grains := func(kind string, n func(actors.GrainCounts) int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "imsync_grains_active", Help: "Grains active on this member, by kind.", ConstLabels: prometheus.Labels{"kind": kind},
		}, func() float64 { return float64(n(svc.GrainsActive())) })
	}
	m.reg.MustRegister(
		grains("conversation", func(g actors.GrainCounts) int64 { return g.Conversations }),
		grains("user", func(g actors.GrainCounts) int64 { return g.Users }),
		grains("device", func(g actors.GrainCounts) int64 { return g.Devices }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "imsync_fanout_backlog_events", Help: "Conversation events appended (or being appended) on this member and not yet in every member's inbox.",
		}, func() float64 { return float64(svc.FanoutBacklog()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "imsync_cluster_members", Help: "Members of the cluster as this member sees them.",
		}, func() float64 { return float64(svc.Members()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "imsync_cluster_requests_failed_over_total", Help: "Grain requests sent again to the grain's new owner because the member hosting it left while they waited.",
		}, func() float64 { return float64(svc.RequestsFailedOver()) }),
	)
}

// WatchStore adds gauges of the embedded store's pebble database; stats
// is read at each scrape (an EventStoreDB backend has none: skip it).
func (m *Metrics) WatchStore(stats func() (events.StoreStats, bool)) {
	m.reg.MustRegister(&storeCollector{stats: stats})
}

var storeDescs = []struct {
	desc *prometheus.Desc
	kind prometheus.ValueType
	val  func(events.StoreStats) float64
}{
	{prometheus.NewDesc("imsync_pebble_disk_bytes", "On-disk size of the embedded store's pebble database.", nil, nil), prometheus.GaugeValue, func(s events.StoreStats) float64 { return float64(s.DiskBytes) }},
	{prometheus.NewDesc("imsync_pebble_wal_bytes", "Live write-ahead log bytes.", nil, nil), prometheus.GaugeValue, func(s events.StoreStats) float64 { return float64(s.WALBytes) }},
	{prometheus.NewDesc("imsync_pebble_memtable_bytes", "Memtable bytes in memory.", nil, nil), prometheus.GaugeValue, func(s events.StoreStats) float64 { return float64(s.MemTableBytes) }},
	{prometheus.NewDesc("imsync_pebble_l0_files", "Sorted tables in level 0; a growing number means compaction falls behind.", nil, nil), prometheus.GaugeValue, func(s events.StoreStats) float64 { return float64(s.L0Files) }},
	{prometheus.NewDesc("imsync_pebble_l0_sublevels", "Sublevels of level 0.", nil, nil), prometheus.GaugeValue, func(s events.StoreStats) float64 { return float64(s.L0Sublevels) }},
	{prometheus.NewDesc("imsync_pebble_read_amplification", "Tables a point read may consult.", nil, nil), prometheus.GaugeValue, func(s events.StoreStats) float64 { return float64(s.ReadAmplification) }},
	{prometheus.NewDesc("imsync_pebble_compaction_debt_bytes", "Estimated bytes to compact for a settled database.", nil, nil), prometheus.GaugeValue, func(s events.StoreStats) float64 { return float64(s.CompactionDebtBytes) }},
	{prometheus.NewDesc("imsync_pebble_compactions_total", "Compactions since the store opened.", nil, nil), prometheus.CounterValue, func(s events.StoreStats) float64 { return float64(s.Compactions) }},
	{prometheus.NewDesc("imsync_pebble_flushes_total", "Memtable flushes since the store opened.", nil, nil), prometheus.CounterValue, func(s events.StoreStats) float64 { return float64(s.Flushes) }},
	{prometheus.NewDesc("imsync_pebble_block_cache_hits_total", "Block cache hits.", nil, nil), prometheus.CounterValue, func(s events.StoreStats) float64 { return float64(s.BlockCacheHits) }},
	{prometheus.NewDesc("imsync_pebble_block_cache_misses_total", "Block cache misses.", nil, nil), prometheus.CounterValue, func(s events.StoreStats) float64 { return float64(s.BlockCacheMisses) }},
}

type storeCollector struct {
	stats func() (events.StoreStats, bool)
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range storeDescs {
		ch <- d.desc
	}
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	st, ok := c.stats()
	if !ok {
		return // closed: no series rather than zeros
	}
	for _, d := range storeDescs {
		ch <- prometheus.MustNewConstMetric(d.desc, d.kind, d.val(st))
	}
}

// InstrumentStore returns store with its appends timed
// (imsync_store_append_duration_seconds). Give it to the grains; close
// the original.
func (m *Metrics) InstrumentStore(store events.Store) events.Store {
	if m == nil {
		return store
	}
	return &timedStore{Store: store, m: m}
}

type timedStore struct {
	events.Store
	m *Metrics
}

func (t *timedStore) AppendToStream(ctx context.Context, stream string, expected events.ExpectedRevision, evs ...events.EventData) (events.WriteResult, error) {
	start := time.Now()
	r, err := t.Store.AppendToStream(ctx, stream, expected, evs...)
	if err == nil {
		t.m.appendSeconds.WithLabelValues(streamKind(stream)).Observe(time.Since(start).Seconds())
	}
	return r, err
}

// streamKind is the label of a stream: its prefix's name.
func streamKind(stream string) string {
	switch {
	case strings.HasPrefix(stream, events.ConversationPrefix):
		return "conversation"
	case strings.HasPrefix(stream, events.InboxPrefix):
		return "inbox"
	case strings.HasPrefix(stream, events.DevicePrefix):
		return "device"
	case strings.HasPrefix(stream, events.SnapshotPrefix):
		return "snapshot"
	case strings.HasPrefix(stream, events.FanoutPrefix):
		return "fanout"
	}
	return "other"
}

// opName names a request's operation as its proto field does.
func opName(req *wire.Request) string {
	switch req.Op.(type) {
	case *wire.Request_Send:
		return "send"
	case *wire.Request_CreateGroup:
		return "create_group"
	case *wire.Request_OpenDirect:
		return "open_direct"
	case *wire.Request_ChangeMember:
		return "change_member"
	case *wire.Request_Recall:
		return "recall"
	case *wire.Request_Edit:
		return "edit"
	case *wire.Request_MarkRead:
		return "mark_read"
	case *wire.Request_Sync:
		return "sync"
	case *wire.Request_History:
		return "history"
	case *wire.Request_Conversations:
		return "conversations"
	case *wire.Request_Conversation:
		return "conversation"
	case *wire.Request_Search:
		return "search"
	}
	return "unknown"
}

// codeName is the label of a result code (docs/protocol.md, Errors).
func codeName(code uint32) string {
	switch code {
	case 0:
		return "ok"
	case wire.CodeBadFrame:
		return "bad_frame"
	case wire.CodeUnknown:
		return "unknown"
	case wire.CodeUnauthorized:
		return "unauthorized"
	case wire.CodeRateLimited:
		return "rate_limited"
	case wire.CodeTooMany:
		return "too_many"
	case wire.CodeShutdown:
		return "shutdown"
	case wire.CodeInternal:
		return "internal"
	case wire.CodeReplaced:
		return "replaced"
	case wire.CodeBusy:
		return "busy"
	}
	if n, ok := actors.Code_name[int32(code)]; ok {
		return strings.ToLower(n)
	}
	return strconv.FormatUint(uint64(code), 10)
}

// answered records one request's answer.
func (m *Metrics) answered(req *wire.Request, res *wire.Response, took time.Duration, bytes int) {
	if m == nil {
		return
	}
	op := opName(req)
	code := uint32(0)
	if e := res.GetError(); e != nil {
		code = e.Code
	}
	m.requests.WithLabelValues(op, codeName(code)).Inc()
	m.requestSeconds.WithLabelValues(op).Observe(took.Seconds())
	switch {
	case code != 0:
	case res.GetSent() != nil:
		if res.GetSent().Duplicate {
			m.sends.WithLabelValues("duplicate").Inc()
		} else {
			m.sends.WithLabelValues("stored").Inc()
		}
	case res.GetSync() != nil || res.GetSyncZstd() != nil:
		m.syncPages.Inc()
		m.syncBytes.Add(float64(bytes))
	}
}

// refused records a request refused before it ran (103 and the like).
func (m *Metrics) refused(req *wire.Request, code uint32, reason string) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(opName(req), codeName(code)).Inc()
	if code == wire.CodeRateLimited {
		m.refusals.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) loginRefused(reason string) {
	if m != nil {
		m.loginsRefused.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) disconnected(reason string) {
	if m != nil {
		m.disconnects.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) pushed(n int) {
	if m != nil {
		m.pushes.Add(float64(n))
	}
}

func (m *Metrics) coalesced(n int) {
	if m != nil && n > 0 {
		m.pushesCoalesced.Add(float64(n))
	}
}

// messagePointerType is the sync entry type of a new message.
var messagePointerType = events.TypeOf(&eventspb.MessagePointer{})

// pushQueued measures send→push for a push that carries a new message.
func (m *Metrics) pushQueued(e *eventspb.SyncEntry) {
	if m == nil || e == nil || e.Type != messagePointerType {
		return
	}
	at, ok := messageTime(e.Data)
	if !ok {
		return
	}
	if d := time.Since(time.UnixMilli(at)); d >= 0 {
		m.sendToPush.Observe(d.Seconds())
	}
}

// messageTime reads MessagePointer.message.at_unix_ms from an encoded
// MessagePointer without decoding the rest (a push path cost).
func messageTime(b []byte) (int64, bool) {
	msg, ok := field(b, 3, protowire.BytesType) // MessagePointer.message
	if !ok {
		return 0, false
	}
	at, ok := field(msg, 8, protowire.VarintType) // MessageSent.at_unix_ms
	if !ok || len(at) == 0 {
		return 0, false
	}
	v, n := protowire.ConsumeVarint(at)
	if n < 0 || v == 0 {
		return 0, false
	}
	return int64(v), true
}

// field returns the last occurrence of field num of type typ in the
// encoded message b: a varint's bytes, or a length-delimited field's
// contents.
func field(b []byte, num protowire.Number, typ protowire.Type) (val []byte, found bool) {
	for len(b) > 0 {
		n, t, l := protowire.ConsumeTag(b)
		if l < 0 {
			return nil, false
		}
		b = b[l:]
		l = protowire.ConsumeFieldValue(n, t, b)
		if l < 0 {
			return nil, false
		}
		if n == num && t == typ {
			val, found = b[:l], true
			if typ == protowire.BytesType {
				v, _ := protowire.ConsumeBytes(b[:l])
				val = v
			}
		}
		b = b[l:]
	}
	return val, found
}

// watchServer adds the gauges that s answers: connections, devices online,
// draining, following the revocations.
func (m *Metrics) watchServer(s *Server) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "imsync_connections", Help: "QUIC connections open, logged in or not.",
		}, func() float64 { return float64(s.counts().conns) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "imsync_connections_logging_in", Help: "Connections between their QUIC handshake and their welcome.",
		}, func() float64 { return float64(s.counts().preauth) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "imsync_devices_online", Help: "Devices with at least one logged-in connection.",
		}, func() float64 { return float64(s.counts().devices) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "imsync_users_online", Help: "Users with at least one logged-in connection.",
		}, func() float64 { return float64(s.counts().users) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "imsync_draining", Help: "1 while the server drains (stopping), else 0.",
		}, func() float64 {
			if s.Draining() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "imsync_revocations_follow_up",
			Help: "0 while this node does not follow the revocations stream (it admits tokens revoked through other nodes), else 1.",
		}, func() float64 {
			if s.cfg.Revocations.FollowErr() != nil {
				return 0
			}
			return 1
		}),
	)
}
