package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/quic-go/quic-go"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/transport/wire"
)

// ALPN is the protocol name negotiated in the TLS handshake; a client that
// does not offer it is refused by TLS itself.
const ALPN = "imsync/1"

// Config configures a Server. Service, Key and TLS are required.
type Config struct {
	Service *actors.Service
	Key     *Key
	TLS     *tls.Config // the server certificate; ALPN and TLS 1.3 are set here

	MaxFrameSize      int           // default wire.DefaultMaxFrameSize
	RequestsPerSecond float64       // per connection (default 2,000)
	RequestBurst      int           // default 500
	MaxConnsPerUser   int           // default 16
	PushQueue         int           // notifications queued per connection before coalescing (default 64)
	MaxInflight       int           // requests handled at once per connection (default 256)
	HandshakeTimeout  time.Duration // for Hello (default 10 s)
	IdleTimeout       time.Duration // QUIC idle timeout (default 60 s; keep-alive at a third)
	Logger            *slog.Logger
	Now               func() time.Time
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
	ln  *quic.Listener

	mu      sync.Mutex
	perUser map[string]int
	conns   map[*quic.Conn]struct{}
	closed  bool
	wg      sync.WaitGroup
}

// NewServer checks cfg and returns a server ready to Listen.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Service == nil || cfg.Key == nil || cfg.TLS == nil {
		return nil, errors.New("transport: Config needs Service, Key and TLS")
	}
	cfg.fill()
	t := cfg.TLS.Clone()
	t.NextProtos = []string{ALPN}
	t.MinVersion = tls.VersionTLS13
	cfg.TLS = t
	return &Server{cfg: cfg, perUser: map[string]int{}, conns: map[*quic.Conn]struct{}{}}, nil
}

// QUICConfig is the transport configuration shared by server and client.
func QUICConfig(idle time.Duration) *quic.Config {
	return &quic.Config{
		MaxIdleTimeout:     idle,
		KeepAlivePeriod:    idle / 3,
		MaxIncomingStreams: 1024,
	}
}

// Listen binds addr (UDP) and serves until Close. It returns once
// listening; Addr tells where.
func (s *Server) Listen(addr string) error {
	ln, err := quic.ListenAddr(addr, s.cfg.TLS, QUICConfig(s.cfg.IdleTimeout))
	if err != nil {
		return fmt.Errorf("transport: listen %s: %w", addr, err)
	}
	s.ln = ln
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
	for c := range s.conns {
		c.CloseWithError(quic.ApplicationErrorCode(wire.CodeShutdown), "server stopping")
	}
	s.mu.Unlock()
	err := s.ln.Close()
	s.wg.Wait()
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
		if s.closed {
			s.mu.Unlock()
			qc.CloseWithError(quic.ApplicationErrorCode(wire.CodeShutdown), "server stopping")
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

	mu      sync.Mutex // guards queue and writes to control
	queue   []*wire.Notify
	wake    chan struct{}
	dropped int // notifications coalesced away (slow device)
}

func (s *Server) serveConn(qc *quic.Conn) {
	ctx := qc.Context()
	hctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	control, err := qc.AcceptStream(hctx)
	cancel()
	if err != nil {
		qc.CloseWithError(quic.ApplicationErrorCode(wire.CodeBadFrame), "no control stream")
		return
	}
	refuse := func(code uint32, msg string) {
		wire.WriteFrame(control, &wire.ServerPush{Push: &wire.ServerPush_Error{Error: &wire.Error{Code: code, Message: msg}}})
		control.Close()
		time.Sleep(50 * time.Millisecond) // let the error frame leave before the close
		qc.CloseWithError(quic.ApplicationErrorCode(code), msg)
	}
	control.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	rd := wire.NewReader(control, s.cfg.MaxFrameSize)
	var hello wire.Hello
	if err := rd.Read(&hello); err != nil {
		refuse(wire.CodeBadFrame, "expected Hello: "+err.Error())
		return
	}
	control.SetReadDeadline(time.Time{})
	claims, err := s.cfg.Key.Verify(hello.Token, s.cfg.Now())
	if err != nil {
		refuse(wire.CodeUnauthorized, err.Error())
		return
	}
	if !s.admit(claims.User) {
		refuse(wire.CodeTooMany, fmt.Sprintf("more than %d connections for %s", s.cfg.MaxConnsPerUser, claims.User))
		return
	}
	defer s.leave(claims.User)

	c := &conn{
		s: s, qc: qc, user: claims.User, device: claims.Device, control: control,
		limiter: rate.NewLimiter(rate.Limit(s.cfg.RequestsPerSecond), s.cfg.RequestBurst),
		sem:     make(chan struct{}, s.cfg.MaxInflight),
		wake:    make(chan struct{}, 1),
	}
	svc := s.cfg.Service
	system := svc.ActorSystem()
	pid := system.Root.Spawn(actor.PropsFromFunc(func(actx actor.Context) {
		if p, ok := actx.Message().(*actors.Push); ok {
			c.enqueue(&wire.Notify{UserSeq: p.UserSeq, Entry: p.Entry})
		}
	}))
	defer system.Root.Stop(pid)
	if _, err := svc.AttachDevice(ctx, c.user, c.device, pid); err != nil {
		refuse(codeOf(err), err.Error())
		return
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		svc.DetachDevice(dctx, c.user, c.device, pid)
	}()
	welcome, err := c.welcome(ctx, hello.LastUserSeq)
	if err != nil {
		refuse(codeOf(err), err.Error())
		return
	}
	if err := c.writeControl(&wire.ServerPush{Push: &wire.ServerPush_Welcome{Welcome: welcome}}); err != nil {
		return
	}
	s.cfg.Logger.Debug("device connected", "user", c.user, "device", c.device, "remote", qc.RemoteAddr())

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

func (s *Server) admit(user string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perUser[user] >= s.cfg.MaxConnsPerUser {
		return false
	}
	s.perUser[user]++
	return true
}

func (s *Server) leave(user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perUser[user]--; s.perUser[user] <= 0 {
		delete(s.perUser, user)
	}
}

// welcome tells a device where its timeline is and which conversations
// changed since its last seq (all of them on a first login).
func (c *conn) welcome(ctx context.Context, last uint64) (*wire.Welcome, error) {
	svc := c.s.cfg.Service
	list, err := svc.Conversations(ctx, c.user)
	if err != nil {
		return nil, err
	}
	w := &wire.Welcome{User: c.user, Device: c.device, UserSeq: list.UserSeq, MaxFrameSize: uint32(c.s.cfg.MaxFrameSize)}
	if last == 0 || list.UserSeq < last || list.UserSeq-last > 1000 {
		w.Changed = list.Conversations
		return w, nil
	}
	changed := map[string]bool{}
	for after := last; after < list.UserSeq; {
		page, err := svc.Sync(ctx, c.user, after, 1000)
		if err != nil {
			return nil, err
		}
		if len(page.Entries) == 0 {
			break
		}
		for _, e := range page.Entries {
			if conv := entryConversation(e); conv != "" {
				changed[conv] = true
			}
			after = e.UserSeq
		}
	}
	for _, s := range list.Conversations {
		if changed[s.ConversationId] || (s.ReadFanout && s.LastSeq > 0) {
			w.Changed = append(w.Changed, s)
		}
	}
	return w, nil
}

func entryConversation(e *eventspb.SyncEntry) string {
	m, err := events.Decode(e.Type, e.Data)
	if err != nil {
		return ""
	}
	if c, ok := m.(interface{ GetConversationId() string }); ok {
		return c.GetConversationId()
	}
	return ""
}

func (c *conn) writeControl(m proto.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return wire.WriteFrame(c.control, m)
}

// enqueue adds a notification; a device that does not keep up gets one
// "pull from here" instead of an ever longer queue: memory per connection
// stays bounded by PushQueue entries.
func (c *conn) enqueue(n *wire.Notify) {
	c.mu.Lock()
	if len(c.queue) >= c.s.cfg.PushQueue {
		c.dropped += len(c.queue)
		c.queue = c.queue[:0]
		n = &wire.Notify{UserSeq: n.UserSeq} // no entry: the device pulls
	}
	c.queue = append(c.queue, n)
	c.mu.Unlock()
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
		c.queue = nil
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
		if ack := m.GetAck(); ack != nil {
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := c.s.cfg.Service.AckDevice(actx, c.user, c.device, ack.UserSeq)
			cancel()
			if err != nil && ctx.Err() == nil {
				c.writeControl(&wire.ServerPush{Push: &wire.ServerPush_Error{Error: toWireError(err)}})
			}
		}
	}
}

// serveRequests reads requests from one stream and answers each, in any
// order, as it completes. A malformed frame ends the stream (the reader
// cannot find the next frame) but not the connection.
func (c *conn) serveRequests(ctx context.Context, st *quic.Stream) {
	var wmu sync.Mutex
	respond := func(r *wire.Response) {
		wmu.Lock()
		defer wmu.Unlock()
		wire.WriteFrame(st, r)
	}
	defer st.Close()
	rd := wire.NewReader(st, c.s.cfg.MaxFrameSize)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		var req wire.Request
		if err := rd.Read(&req); err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				respond(&wire.Response{Result: &wire.Response_Error{Error: &wire.Error{Code: wire.CodeBadFrame, Message: err.Error()}}})
				st.CancelRead(quic.StreamErrorCode(wire.CodeBadFrame))
			}
			return
		}
		if !c.limiter.AllowN(time.Now(), requestCost(&req, c.s.cfg.RequestBurst)) {
			respond(&wire.Response{Id: req.Id, Result: &wire.Response_Error{Error: &wire.Error{Code: wire.CodeRateLimited, Message: "request rate limit"}}})
			continue
		}
		select {
		case c.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer func() { <-c.sem; wg.Done() }()
			respond(c.handle(ctx, &req))
		}()
	}
}
