package transport

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/transport/wire"
)

// ALPN is the protocol name negotiated in the TLS handshake; a client that
// does not offer it is refused by TLS itself.
const ALPN = "imsync/1"

// Config configures a Server. Service, TLS and Key or JWKS are required.
type Config struct {
	Service *actors.Service
	// Key is the data directory's development key: its JWTs (and its v1
	// tokens of earlier releases) are accepted.
	Key *Key
	// JWKS holds the public keys of the app backend that mints device
	// tokens (optional); a token picks its key by kid. Reload it for key
	// rotation.
	JWKS *JWKS
	// TokenRules are the aud and iss claims every JWT must carry.
	TokenRules TokenRules
	TLS        *tls.Config // the server certificate; ALPN and TLS 1.3 are set here

	MaxFrameSize      int           // default wire.DefaultMaxFrameSize
	RequestsPerSecond float64       // per connection (default 2,000)
	RequestBurst      int           // default 500
	MaxConnsPerUser   int           // default 16
	PushQueue         int           // notifications queued per connection before coalescing (default 64)
	MaxInflight       int           // requests handled at once per connection (default 256)
	HandshakeTimeout  time.Duration // for Hello (default 10 s)
	IdleTimeout       time.Duration // QUIC idle timeout (default 60 s; keep-alive at a third)
	// StatelessResetKey lets a restarted server reset the connections of
	// its previous run (see LoadOrCreateResetKey); nil: a random key, good
	// for this process only.
	StatelessResetKey *quic.StatelessResetKey
	Logger            *slog.Logger
	Now               func() time.Time
	// Search answers Search requests (see search.go); nil: they are
	// refused as unavailable.
	Search Searcher
	// Metrics, if set, receives the gateway's series (see NewMetrics).
	Metrics *Metrics

	// MaxUnauthenticated caps the connections that have not yet been
	// welcomed, server-wide (default 256). When they are all taken, a new
	// connection takes the slot of the oldest such connection of the
	// network prefix holding the most slots, if that prefix holds more
	// than the new connection's own (the old one is closed with code 108);
	// otherwise the new one is closed with code 108. So a login from a
	// prefix that holds no slot is never kept out by others.
	MaxUnauthenticated int
	// MaxUnauthenticatedPerPrefix caps them per network prefix of the
	// remote address, IPv4 /24 and IPv6 /64 (default 32), so that one
	// source, which may own every address of its prefix, cannot take every
	// slot. QUIC's handshake has proved the address by then.
	MaxUnauthenticatedPerPrefix int
	// ReadBudget bounds the bytes of one connection's requests, all streams
	// together, from their first byte until they are answered (default and
	// minimum: MaxFrameSize). A frame that would exceed it while being read
	// is refused (code 100) and its stream closed; a whole request that
	// would is refused with code 103.
	ReadBudget int
	// WriteBudget bounds the bytes of one connection's answers being
	// computed or not yet taken by the client (default 2 MiB). A request
	// waits for room up to WriteTimeout, then is refused with code 103.
	WriteBudget int
	// FrameTimeout: a request frame that has started must be complete
	// within this (default 10 s).
	FrameTimeout time.Duration
	// WriteTimeout: an answer the client does not take within this ends
	// its stream (default 10 s), freeing the answers waiting on it.
	WriteTimeout time.Duration

	// Revocations, if set, refuse tokens issued before a user's
	// revocation (RevokeTokens; OpenRevocations keeps them in the event
	// store for every node, LoadRevocations in a file for this one).
	Revocations *Revocations
}

func (c *Config) fill() {
	if c.MaxFrameSize <= 0 {
		c.MaxFrameSize = wire.DefaultMaxFrameSize
	}
	if c.RequestsPerSecond <= 0 {
		c.RequestsPerSecond = 2000
	}
	if c.RequestBurst <= 0 {
		c.RequestBurst = 500
	}
	if c.MaxConnsPerUser <= 0 {
		c.MaxConnsPerUser = 16
	}
	if c.PushQueue <= 0 {
		c.PushQueue = 64
	}
	if c.MaxInflight <= 0 {
		c.MaxInflight = 256
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.MaxUnauthenticated <= 0 {
		c.MaxUnauthenticated = 256
	}
	if c.MaxUnauthenticatedPerPrefix <= 0 {
		c.MaxUnauthenticatedPerPrefix = 32
	}
	if c.ReadBudget <= 0 {
		c.ReadBudget = c.MaxFrameSize
	}
	c.ReadBudget = max(c.ReadBudget, c.MaxFrameSize) // one whole frame always fits
	if c.WriteBudget <= 0 {
		c.WriteBudget = 2 << 20
	}
	c.WriteBudget = max(c.WriteBudget, c.MaxFrameSize+smallReserve, answerReserve+smallReserve) // so does one whole answer
	if c.FrameTimeout <= 0 {
		c.FrameTimeout = 10 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Server is the QUIC gateway: it authenticates devices, serves their
// requests on the Service and pushes their notifications.
type Server struct {
	cfg Config
	tr  *quic.Transport
	ln  *quic.Listener

	mu        sync.Mutex
	preauth   int                         // connections not yet welcomed
	prePrefix map[netip.Prefix][]*preSlot // the same, by remote prefix, oldest first
	preSeq    uint64                      // orders preSlots by age
	perUser   map[string][]*conn          // admitted connections, oldest first
	conns     map[*quic.Conn]struct{}
	closed    bool
	draining  bool // Drain has begun: new connections are refused
	wg        sync.WaitGroup

	peak queuePeak // the most any connection has had queued (QueuePeak)

	watcher *revWatcher // on Config.Revocations until Close (revoke.go)
}

// NewServer checks cfg and returns a server ready to Listen.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Service == nil || (cfg.Key == nil && cfg.JWKS == nil) || cfg.TLS == nil {
		return nil, errors.New("transport: Config needs Service, TLS and Key or JWKS")
	}
	cfg.fill()
	if cfg.MaxFrameSize < wire.DefaultMaxFrameSize {
		// Pages are cut at actors.MaxPageBytes (768 KiB), which fits 1 MiB frames.
		return nil, fmt.Errorf("transport: MaxFrameSize %d is below the %d bytes that pages need", cfg.MaxFrameSize, wire.DefaultMaxFrameSize)
	}
	t := cfg.TLS.Clone()
	t.NextProtos = []string{ALPN}
	t.MinVersion = tls.VersionTLS13
	cfg.TLS = t
	s := &Server{cfg: cfg, perUser: map[string][]*conn{}, prePrefix: map[netip.Prefix][]*preSlot{}, conns: map[*quic.Conn]struct{}{}}
	if cfg.Metrics != nil {
		cfg.Metrics.watchServer(s)
	}
	if cfg.Revocations != nil {
		s.watcher = s.revocationWatcher() // revocations and disconnects (revoke.go)
		cfg.Revocations.watch(s.watcher)
	}
	return s, nil
}

// QUICConfig is the transport configuration shared by server and client.
// The receive windows bound what a peer can make this end buffer unread.
func QUICConfig(idle time.Duration) *quic.Config {
	return &quic.Config{
		MaxIdleTimeout:                 idle,
		KeepAlivePeriod:                idle / 3,
		MaxIncomingStreams:             maxStreams,
		MaxIncomingUniStreams:          -1, // the client opens none
		InitialStreamReceiveWindow:     64 << 10,
		MaxStreamReceiveWindow:         quicReceiveWindow,
		InitialConnectionReceiveWindow: 64 << 10,
		MaxConnectionReceiveWindow:     quicReceiveWindow,
	}
}

// Listen binds addr (UDP) and serves until Close. It returns once
// listening; Addr tells where.
func (s *Server) Listen(addr string) error {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return fmt.Errorf("transport: listen %s: %w", addr, err)
	}
	udp, err := net.ListenUDP("udp", ua)
	if err != nil {
		return fmt.Errorf("transport: listen %s: %w", addr, err)
	}
	key := s.cfg.StatelessResetKey
	if key == nil {
		key = new(quic.StatelessResetKey)
		rand.Read(key[:])
	}
	tr := &quic.Transport{Conn: udp, StatelessResetKey: key}
	ln, err := tr.Listen(s.cfg.TLS, QUICConfig(s.cfg.IdleTimeout))
	if err != nil {
		tr.Close()
		udp.Close()
		return fmt.Errorf("transport: listen %s: %w", addr, err)
	}
	s.tr, s.ln = tr, ln
	s.wg.Add(1)
	go s.accept()
	return nil
}

// Config returns the server's configuration (with defaults filled in).
func (s *Server) Config() Config { return s.cfg }

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops accepting, closes every connection and waits for them.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	if s.watcher != nil {
		s.cfg.Revocations.unwatch(s.watcher)
	}
	for c := range s.conns {
		c.CloseWithError(quic.ApplicationErrorCode(wire.CodeShutdown), "server stopping")
	}
	s.mu.Unlock()
	err := s.ln.Close()
	s.wg.Wait()
	s.tr.Close()
	s.tr.Conn.Close()
	return err
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		qc, err := s.ln.Accept(context.Background())
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed || s.draining {
			s.mu.Unlock()
			s.cfg.Metrics.loginRefused("draining")
			s.cfg.Logger.Debug("connection refused: draining", "remote", qc.RemoteAddr().String())
			qc.CloseWithError(quic.ApplicationErrorCode(wire.CodeShutdown), goAwayMessage)
			continue
		}
		s.conns[qc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serveConn(qc)
			s.mu.Lock()
			delete(s.conns, qc)
			s.mu.Unlock()
		}()
	}
}

// conn is one authenticated device connection.
type conn struct {
	s       *Server
	qc      *quic.Conn
	user    string
	device  string
	control *quic.Stream
	limiter *rate.Limiter
	sem     chan struct{}
	emu     sync.Mutex
	expires time.Time   // the token's expiry: the connection ends then
	issued  int64       // the token's iat (revocations close older ones)
	expiry  *time.Timer // closes the connection at expires
	reads   *byteBudget // partially read request frames
	writes  *byteBudget // answers being computed or written

	// admitted: when the connection counted against its user (a
	// disconnect read from the store closes those admitted by then).
	admitted time.Time

	cmu     sync.Mutex // writes to control
	mu      sync.Mutex // guards queue
	queue   []*wire.Notify
	queued  int // bytes of the notifications in queue
	wake    chan struct{}
	dropped int // notifications coalesced away (slow device)

	// heard: the newest user seq pushed to the device. Its syncs pass it
	// on, so that a grain behind that (in a cluster) catches up first.
	heard atomic.Int64

	welcomed bool      // the welcome is written (guarded by cmu)
	away     sync.Once // the going-away notice (goAway)
	warned   warnings  // slow-consumer conditions logged once
}

func (s *Server) serveConn(qc *quic.Conn) {
	ctx := qc.Context()
	slot, msg := s.enterPreauth(qc)
	if slot == nil {
		s.cfg.Metrics.loginRefused("busy")
		s.cfg.Logger.Debug("login refused", "reason", msg, "code", wire.CodeBusy, "remote", qc.RemoteAddr().String())
		qc.CloseWithError(quic.ApplicationErrorCode(wire.CodeBusy), msg)
		return
	}
	leavePreauth := sync.OnceFunc(func() { s.leavePreauth(slot) })
	defer leavePreauth()
	hctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	control, err := qc.AcceptStream(hctx)
	cancel()
	if err != nil {
		qc.CloseWithError(quic.ApplicationErrorCode(wire.CodeBadFrame), "no control stream")
		return
	}
	refuse := func(code uint32, msg string) {
		// msg never holds the token: Verify's errors say what is wrong with it.
		s.cfg.Metrics.loginRefused(codeName(code))
		s.cfg.Logger.Info("login refused", "reason", msg, "code", code, "remote", qc.RemoteAddr().String())
		wire.WriteFrame(control, &wire.ServerPush{Push: &wire.ServerPush_Error{Error: &wire.Error{Code: code, Message: msg}}})
		control.Close()
		time.Sleep(50 * time.Millisecond) // let the error frame leave before the close
		qc.CloseWithError(quic.ApplicationErrorCode(code), msg)
	}
	control.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	// Hello and the later control frames are small: a token is under 1 KiB.
	rd := wire.NewReader(control, maxHelloSize)
	var hello wire.Hello
	if err := rd.Read(&hello); err != nil {
		refuse(wire.CodeBadFrame, "expected Hello: "+err.Error())
		return
	}
	control.SetReadDeadline(time.Time{})
	rd.WithFrameTimeout(s.cfg.FrameTimeout)
	claims, err := s.verifyToken(hello.Token)
	if err == nil {
		err = s.checkRevoked(claims)
	}
	if err != nil {
		refuse(wire.CodeUnauthorized, err.Error())
		return
	}
	c := &conn{
		s: s, qc: qc, user: claims.User, device: claims.Device, control: control,
		limiter: rate.NewLimiter(rate.Limit(s.cfg.RequestsPerSecond), s.cfg.RequestBurst),
		sem:     make(chan struct{}, s.cfg.MaxInflight),
		wake:    make(chan struct{}, 1),
		expires: time.Unix(claims.Expires, 0),
		issued:  claims.Issued,
		reads:   newByteBudget(s.cfg.ReadBudget),
		writes:  newByteBudget(s.cfg.WriteBudget),
	}
	if !s.admit(c) {
		refuse(wire.CodeTooMany, fmt.Sprintf("more than %d connections for %s", s.cfg.MaxConnsPerUser, claims.User))
		return
	}
	defer s.leave(c)
	if err := s.checkRevoked(claims); err != nil { // revoked while logging in
		refuse(wire.CodeUnauthorized, err.Error())
		return
	}
	// The connection ends when its token does, unless the client
	// re-authenticates first: a device keeps only the access its current
	// token grants.
	c.emu.Lock()
	c.expiry = time.AfterFunc(c.expires.Sub(s.cfg.Now()), func() {
		s.cfg.Logger.Debug("token expired", "user", c.user, "device", c.device, "remote", qc.RemoteAddr())
		qc.CloseWithError(quic.ApplicationErrorCode(wire.CodeUnauthorized), "token expired")
	})
	c.emu.Unlock()
	defer c.expiry.Stop()

	svc := s.cfg.Service
	att, err := svc.AttachDevice(ctx, c.user, c.device, c)
	if err != nil {
		refuse(codeOf(err), err.Error())
		return
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		att.Detach(dctx)
	}()
	welcome, err := c.welcome(ctx, hello.LastUserSeq)
	if err != nil {
		refuse(codeOf(err), err.Error())
		return
	}
	welcome.TokenExpires = claims.Expires
	if err := c.writeControl(&wire.ServerPush{Push: &wire.ServerPush_Welcome{Welcome: welcome}}); err != nil {
		return
	}
	c.cmu.Lock()
	c.welcomed = true
	c.cmu.Unlock()
	leavePreauth()
	s.cfg.Logger.Debug("device connected", "user", c.user, "device", c.device, "remote", qc.RemoteAddr().String())
	defer c.logDisconnect(time.Now())
	if s.Draining() { // Drain began while this one logged in
		c.goAway()
	}

	// Notifications go on a stream of the server's own, so that neither
	// side's control traffic waits behind them.
	push, err := qc.OpenUniStreamSync(ctx)
	if err != nil {
		return
	}
	// A stream reaches the peer with its first bytes: start with where the
	// timeline is (what Welcome said), so that the client can accept it.
	if err := wire.WriteFrame(push, &wire.ServerPush{Push: &wire.ServerPush_Notify{Notify: &wire.Notify{UserSeq: welcome.UserSeq}}}); err != nil {
		return
	}
	go c.pushLoop(ctx, push)
	go c.controlLoop(ctx, rd)
	for {
		st, err := qc.AcceptStream(ctx)
		if err != nil {
			return
		}
		go c.serveRequests(ctx, st)
	}
}

// preSlot is a pre-login slot: a connection between its QUIC handshake
// and its welcome.
type preSlot struct {
	qc     *quic.Conn
	prefix netip.Prefix
	seq    uint64 // lower: older
}

// enterPreauth takes a pre-login slot for qc, or returns why not: its
// prefix holds MaxUnauthenticatedPerPrefix slots, or every slot is taken
// and no prefix holds more than qc's. When every slot is taken, the oldest
// slot of the prefix holding the most (the oldest such slot when prefixes
// tie) goes to qc, and its connection is closed with code 108.
func (s *Server) enterPreauth(qc *quic.Conn) (*preSlot, string) {
	p := remotePrefix(qc.RemoteAddr())
	var victim *preSlot
	defer func() {
		if victim != nil {
			s.cfg.Logger.Debug("pre-login connection evicted", "remote", victim.qc.RemoteAddr(), "by", qc.RemoteAddr())
			victim.qc.CloseWithError(quic.ApplicationErrorCode(wire.CodeBusy), "server busy: too many connections logging in from your network; retry")
		}
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	mine := len(s.prePrefix[p])
	if mine >= s.cfg.MaxUnauthenticatedPerPrefix {
		return nil, fmt.Sprintf("server busy: more than %d connections logging in from %s; retry", s.cfg.MaxUnauthenticatedPerPrefix, p)
	}
	if s.preauth >= s.cfg.MaxUnauthenticated {
		var most []*preSlot
		for _, l := range s.prePrefix {
			if len(l) > len(most) || (len(l) == len(most) && l[0].seq < most[0].seq) {
				most = l
			}
		}
		if len(most) <= mine {
			return nil, fmt.Sprintf("server busy: more than %d connections logging in; retry", s.cfg.MaxUnauthenticated)
		}
		victim = most[0]
		s.dropPreauth(victim)
	}
	s.preSeq++
	slot := &preSlot{qc: qc, prefix: p, seq: s.preSeq}
	s.prePrefix[p] = append(s.prePrefix[p], slot)
	s.preauth++
	return slot, ""
}

// leavePreauth frees slot (unless it was taken from it already).
func (s *Server) leavePreauth(slot *preSlot) {
	s.mu.Lock()
	s.dropPreauth(slot)
	s.mu.Unlock()
}

// dropPreauth frees slot if it is still held; s.mu is held.
func (s *Server) dropPreauth(slot *preSlot) {
	l := s.prePrefix[slot.prefix]
	i := slices.Index(l, slot)
	if i < 0 {
		return
	}
	s.preauth--
	if l = slices.Delete(l, i, i+1); len(l) == 0 {
		delete(s.prePrefix, slot.prefix)
		return
	}
	s.prePrefix[slot.prefix] = l
}

// remotePrefix is the network of a remote address that pre-login slots are
// counted by: IPv4 /24, IPv6 /64 (an IPv4-mapped IPv6 address counts as
// IPv4).
func remotePrefix(a net.Addr) netip.Prefix {
	u, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.Prefix{}
	}
	ip := u.AddrPort().Addr().Unmap()
	bits := 64
	if ip.Is4() {
		bits = 24
	}
	p, _ := ip.Prefix(bits)
	return p
}

// admit counts c against its user's connection cap. At the cap, a new
// connection of a device that already has one replaces the device's oldest
// connection (which is closed): a device that reconnects is never locked
// out by its own half-open connections, while other devices' connections
// are never taken. Otherwise the new connection is refused.
func (s *Server) admit(c *conn) bool {
	s.mu.Lock()
	list := s.perUser[c.user]
	var old *conn
	if len(list) >= s.cfg.MaxConnsPerUser {
		i := slices.IndexFunc(list, func(o *conn) bool { return o.device == c.device })
		if i < 0 {
			s.mu.Unlock()
			return false
		}
		old = list[i]
		list = slices.Delete(list, i, i+1)
	}
	c.admitted = s.cfg.Now()
	s.perUser[c.user] = append(list, c)
	s.mu.Unlock()
	if old != nil {
		s.cfg.Logger.Debug("connection replaced", "user", old.user, "device", old.device, "remote", old.qc.RemoteAddr())
		old.qc.CloseWithError(quic.ApplicationErrorCode(wire.CodeReplaced), "replaced by a newer connection of this device")
	}
	return true
}

// leave forgets c (if a newer connection has not replaced it already).
func (s *Server) leave(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := slices.DeleteFunc(s.perUser[c.user], func(o *conn) bool { return o == c })
	if len(list) == 0 {
		delete(s.perUser, c.user)
		return
	}
	s.perUser[c.user] = list
}

// Push is how the device's grain reaches this connection (actors.DeviceSink).
func (c *conn) Push(p *actors.Push) {
	raise(&c.heard, int64(p.UserSeq))
	c.s.cfg.Metrics.pushQueued(p.Entry)
	c.enqueue(&wire.Notify{UserSeq: p.UserSeq, Entry: p.Entry, ConversationId: p.ConversationId, ConvSeq: p.ConvSeq})
}

var _ actors.DeviceSink = (*conn)(nil)

// welcome tells a device where its timeline is and which conversations
// changed since its last seq (all of them on a first login): a first page
// that fits a frame, with more_changed when the device must page the rest.
func (c *conn) welcome(ctx context.Context, last uint64) (*wire.Welcome, error) {
	svc := c.s.cfg.Service
	q := actors.ListQuery{Limit: actors.MaxListLimit, ChangedAfter: last}
	list, err := svc.ConversationPage(ctx, c.user, q)
	if err != nil {
		return nil, err
	}
	if list.UserSeq < last { // the device is ahead of this server: everything is news
		q.ChangedAfter = 0
		if list, err = svc.ConversationPage(ctx, c.user, q); err != nil {
			return nil, err
		}
	}
	return &wire.Welcome{
		User: c.user, Device: c.device, UserSeq: list.UserSeq, MaxFrameSize: uint32(c.s.cfg.MaxFrameSize),
		Changed: list.Conversations, MoreChanged: list.More, ChangedCursor: list.NextCursor, ChangedAfterUserSeq: q.ChangedAfter,
	}, nil
}

// writeControl writes one frame on the control stream. A client that does
// not read it within WriteTimeout loses the connection: a write never
// blocks for good, and never holds up the push queue.
func (c *conn) writeControl(m proto.Message) error {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	c.control.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
	err := wire.WriteFrame(c.control, m)
	c.control.SetWriteDeadline(time.Time{})
	if timedOut(err) && c.qc.Context().Err() == nil { // not merely a connection that ended
		c.warnOnce(warnControl, "slow consumer: control stream not read; closing", "err", err)
	}
	if err != nil {
		c.qc.CloseWithError(quic.ApplicationErrorCode(wire.CodeBadFrame), "control stream not read: "+err.Error())
	}
	return err
}

// enqueue adds a notification; a device that does not keep up gets one
// "pull from here" instead of an ever longer queue: memory per connection
// stays bounded by PushQueue entries.
func (c *conn) enqueue(n *wire.Notify) {
	coalesced := 0
	c.mu.Lock()
	if len(c.queue) >= c.s.cfg.PushQueue {
		// One "pull from here" (no entry) replaces the queue; dropped
		// notices of read-fanout groups become "refresh your list".
		pull := &wire.Notify{UserSeq: n.UserSeq, RefreshList: n.ConversationId != "" || n.RefreshList}
		for _, q := range c.queue {
			pull.UserSeq = max(pull.UserSeq, q.UserSeq)
			pull.RefreshList = pull.RefreshList || q.ConversationId != "" || q.RefreshList
		}
		c.dropped += len(c.queue)
		coalesced = len(c.queue)
		c.queue, c.queued = c.queue[:0], 0
		n = pull
	}
	c.queue = append(c.queue, n)
	c.queued += proto.Size(n)
	c.s.peak.observe(len(c.queue), c.queued)
	c.mu.Unlock()
	if coalesced > 0 {
		c.s.cfg.Metrics.coalesced(coalesced)
		c.warnOnce(warnCoalesced, "slow consumer: notifications coalesced", "queued", coalesced)
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *conn) pushLoop(ctx context.Context, push *quic.SendStream) {
	defer push.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		}
		c.mu.Lock()
		batch := c.queue
		c.queue, c.queued = nil, 0
		c.mu.Unlock()
		var buf []byte
		for _, n := range batch {
			var err error
			if buf, err = wire.AppendFrame(buf, &wire.ServerPush{Push: &wire.ServerPush_Notify{Notify: n}}); err != nil {
				return
			}
		}
		if _, err := push.Write(buf); err != nil { // one write for the whole batch
			return
		}
		c.s.cfg.Metrics.pushed(len(batch))
	}
}

// controlLoop reads acks and pings from the control stream.
func (c *conn) controlLoop(ctx context.Context, rd *wire.Reader) {
	for {
		var m wire.ClientControl
		if err := rd.Read(&m); err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				c.qc.CloseWithError(quic.ApplicationErrorCode(wire.CodeBadFrame), "control stream: "+err.Error())
			}
			return
		}
		if ra := m.GetReauth(); ra != nil {
			if !c.limiter.AllowN(c.s.cfg.Now(), 1) {
				c.writeControl(&wire.ServerPush{Push: &wire.ServerPush_Reauth{Reauth: &wire.ReauthResult{Error: &wire.Error{Code: wire.CodeRateLimited, Message: "request rate limit"}}}})
				continue
			}
			c.reauth(ra.Token)
		}
		if ack := m.GetAck(); ack != nil {
			if !c.limiter.AllowN(c.s.cfg.Now(), 1) {
				continue // acks are only positions: a later one supersedes a refused one
			}
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := c.s.cfg.Service.AckDevice(actx, c.user, c.device, ack.UserSeq)
			cancel()
			if err != nil && ctx.Err() == nil {
				c.writeControl(&wire.ServerPush{Push: &wire.ServerPush_Error{Error: toWireError(err)}})
			}
		}
	}
}

// verifyToken checks a token against the development key and the JWKS: a
// JWT with the configured rules, or a v1 token of the development key.
func (s *Server) verifyToken(token string) (Claims, error) {
	now := s.cfg.Now()
	if isV1(token) {
		if s.cfg.Key == nil {
			return Claims{}, fmt.Errorf("%w: v1 tokens need the development key", ErrBadToken)
		}
		return s.cfg.Key.verifyV1(token, now)
	}
	return verifyJWT(token, now, s.publicKey, s.cfg.TokenRules)
}

// publicKey is the key of kid: from the JWKS, else the development key.
func (s *Server) publicKey(kid string) ed25519.PublicKey {
	if s.cfg.JWKS != nil {
		if k := s.cfg.JWKS.key(kid); k != nil {
			return k
		}
	}
	return s.cfg.Key.public(kid)
}

// reauth moves the connection's expiry to that of a fresh token of the
// same user and device; a refused token leaves the old expiry.
func (c *conn) reauth(token string) {
	claims, err := c.s.verifyToken(token)
	if err == nil {
		err = c.s.checkRevoked(claims)
	}
	if err == nil && (claims.User != c.user || claims.Device != c.device) {
		err = fmt.Errorf("%w: the token is for user %q device %q, not this connection's", ErrBadToken, claims.User, claims.Device)
	}
	if err != nil {
		c.s.cfg.Logger.Info("re-authentication refused", "user", c.user, "device", c.device, "remote", c.qc.RemoteAddr(), "reason", err)
		c.writeControl(&wire.ServerPush{Push: &wire.ServerPush_Reauth{Reauth: &wire.ReauthResult{Error: &wire.Error{Code: wire.CodeUnauthorized, Message: err.Error()}}}})
		return
	}
	c.emu.Lock()
	if c.expiry.Stop() { // not fired yet: the connection lives on
		c.expires = time.Unix(claims.Expires, 0)
		c.expiry.Reset(c.expires.Sub(c.s.cfg.Now()))
		c.issued = claims.Issued
	}
	c.emu.Unlock()
	c.writeControl(&wire.ServerPush{Push: &wire.ServerPush_Reauth{Reauth: &wire.ReauthResult{TokenExpires: claims.Expires}}})
}

// serveRequests reads requests from one stream and answers each, in any
// order, as it completes. A malformed frame ends the stream (the reader
// cannot find the next frame) but not the connection.
//
// Memory: a frame being read counts against the connection's read budget
// (refused beyond it, and when it stalls past FrameTimeout); an answer
// reserves room in the write budget before it runs and holds it until
// the client has taken it. An answer the client does not take within
// WriteTimeout ends the stream's sending side, so answers never pile up.
func (c *conn) serveRequests(ctx context.Context, st *quic.Stream) {
	var wmu sync.Mutex
	broken := false // the client stopped taking answers: drop the rest
	write := func(b []byte) {
		wmu.Lock()
		defer wmu.Unlock()
		if broken {
			return
		}
		st.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
		if _, err := st.Write(b); err != nil {
			// the client does not take its answers: end the stream both
			// ways (the read loop stops; answers still running are dropped)
			broken = true
			if timedOut(err) && ctx.Err() == nil {
				c.warnOnce(warnAnswers, "slow consumer: answers not read; ending the stream", "err", err)
			}
			st.CancelWrite(quic.StreamErrorCode(wire.CodeBadFrame))
			st.CancelRead(quic.StreamErrorCode(wire.CodeBadFrame))
		}
	}
	respondSmall := func(r *wire.Response) { // errors: not counted, one per failure
		if b, err := wire.AppendFrame(nil, r); err == nil {
			write(b)
		}
	}
	defer st.Close()
	rd := wire.NewReader(st, c.s.cfg.MaxFrameSize).WithBudget(c.reads).WithFrameTimeout(c.s.cfg.FrameTimeout)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		var req wire.Request
		if err := rd.Read(&req); err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				var id uint64
				if errors.Is(err, wire.ErrFrameTooLarge) {
					id = rd.RefusedID() // the client can match the refusal to its call
				}
				respondSmall(&wire.Response{Id: id, Result: &wire.Response_Error{Error: &wire.Error{Code: wire.CodeBadFrame, Message: err.Error()}}})
				st.CancelRead(quic.StreamErrorCode(wire.CodeBadFrame))
			}
			return
		}
		if !c.allow(&req) { // on the configured clock, so that tests can drive it
			c.s.cfg.Metrics.refused(&req, wire.CodeRateLimited, "rate")
			c.warnOnce(warnRate, "request rate limit reached", "op", opName(&req))
			respondSmall(&wire.Response{Id: req.Id, Result: &wire.Response_Error{Error: &wire.Error{Code: wire.CodeRateLimited, Message: "request rate limit"}}})
			continue
		}
		// The decoded request stays in the read budget until answered.
		size := proto.Size(&req)
		if err := c.reads.Take(size); err != nil {
			c.s.cfg.Metrics.refused(&req, wire.CodeRateLimited, "read_budget")
			c.warnOnce(warnReadBudget, "read budget exceeded", "err", err)
			respondSmall(&wire.Response{Id: req.Id, Result: &wire.Response_Error{Error: &wire.Error{Code: wire.CodeRateLimited, Message: "connection busy: requests in flight: " + err.Error()}}})
			continue
		}
		// Room for the answer (and the goroutine computing it) first: a
		// client that does not read its answers stops here.
		reserve := smallReserve
		switch req.Op.(type) {
		case *wire.Request_Sync, *wire.Request_History, *wire.Request_Conversations, *wire.Request_Conversation, *wire.Request_Search:
			reserve = answerReserve
		}
		if err := c.writes.acquire(ctx, reserve, c.s.cfg.WriteTimeout); err != nil {
			c.reads.Give(size)
			if ctx.Err() != nil {
				return
			}
			c.s.cfg.Metrics.refused(&req, wire.CodeRateLimited, "write_budget")
			c.warnOnce(warnWriteBudget, "write budget exceeded: answers not taken", "err", err)
			respondSmall(&wire.Response{Id: req.Id, Result: &wire.Response_Error{Error: &wire.Error{Code: wire.CodeRateLimited, Message: "connection busy: " + err.Error()}}})
			continue
		}
		select {
		case c.sem <- struct{}{}:
		case <-ctx.Done():
			c.reads.Give(size)
			c.writes.Give(reserve)
			return
		}
		wg.Add(1)
		go func() {
			defer func() { <-c.sem; c.reads.Give(size); wg.Done() }()
			c.answer(ctx, &req, reserve, write)
		}()
	}
}

// answer runs one request and writes its answer; reserve bytes of the
// write budget are held for it and given back once it is written.
func (c *conn) answer(ctx context.Context, req *wire.Request, reserve int, write func([]byte)) {
	held := reserve
	defer func() { c.writes.Give(held) }()
	start := time.Now()
	res := c.handle(ctx, req)
	b, err := wire.AppendFrame(nil, res)
	c.s.cfg.Metrics.answered(req, res, time.Since(start), len(b))
	if err == nil && len(b) > c.s.cfg.MaxFrameSize {
		err = fmt.Errorf("answer of %d bytes exceeds the frame limit %d", len(b), c.s.cfg.MaxFrameSize)
	}
	if err != nil {
		c.s.cfg.Logger.Error("cannot encode an answer", "user", c.user, "err", err)
		b, _ = wire.AppendFrame(nil, &wire.Response{Id: req.Id, Result: &wire.Response_Error{Error: &wire.Error{Code: wire.CodeInternal, Message: err.Error()}}})
	}
	if len(b) < held { // give back what the answer did not need
		c.writes.Give(held - len(b))
		held = len(b)
	}
	if len(b) > held { // a small answer that turned out large: wait for the rest
		if err := c.writes.acquire(ctx, len(b)-held, c.s.cfg.WriteTimeout); err != nil {
			// No room for it: the caller gets a small refusal, not silence.
			b, _ = wire.AppendFrame(nil, &wire.Response{Id: req.Id, Result: &wire.Response_Error{Error: &wire.Error{Code: wire.CodeRateLimited, Message: "connection busy: " + err.Error()}}})
			write(b)
			return
		}
		held = len(b)
	}
	write(b)
}
