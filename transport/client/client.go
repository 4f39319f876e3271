// Package client is the Go client library of imsync: it connects a device
// over QUIC, keeps the connection up (pinging every KeepAlive, reconnecting
// with back-off and resuming from the device's last user seq; calls made
// meanwhile wait, and those safe to repeat are repeated on the new
// connection), offers a typed call for every
// operation, and delivers the device's sync timeline in order and without
// gaps: pushed entries are applied when they follow the last one, and any
// gap is pulled.
//
// # Usage
//
//	tlsConf, err := client.PinnedTLS(caPEM) // the server's certificate, e.g. DATA/server.crt
//	if err != nil { ... }
//	c, err := client.Dial(ctx, client.Config{
//		Addr: "127.0.0.1:7400", Token: token, TLS: tlsConf, LastUserSeq: saved})
//	if err != nil { ... }
//	defer c.Close()
//	sent, err := c.Send(ctx, client.Message{To: "bob", ClientMsgID: "m-1", Text: "hi"})
//	for e := range c.Entries() {      // in user seq order, gaps filled
//		apply(e)
//		c.Ack(ctx, e.UserSeq)             // the server now knows this device's position
//		save(e.UserSeq)                   // where to resume after a restart
//	}
//	err = c.Err() // why it ended, e.g. the token expired: errors.Is(err, client.ErrBadToken)
//
// With Config.TokenSource instead of Token, the client asks the app for a
// fresh token before each one expires and re-authenticates on the open
// connection, so a session outlives its tokens.
//
// A complete program is the package Example (example_test.go), run by the tests.
//
// It links only the wire protocol and the event schema, never server code.
package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/transport/wire"
)

// ALPN must match the server's.
const ALPN = "imsync/1"

// Config configures a Client.
type Config struct {
	Addr string // host:port of the server (UDP); several, comma-separated, are tried in turn
	// Addrs are more addresses of the same service (the nodes of a
	// cluster, docs/cluster.md): a connection goes to the first of Addr
	// and Addrs that answers, and a reconnection to the first that answers
	// after the one whose connection was lost (that one last); an address
	// that does not answer within 3 s is passed over.
	Addrs []string
	Token string // a device token (docs/tokens.md); unused when TokenSource is set
	// TokenSource, when set, returns a current token (typically from the
	// app's backend): the client calls it for every login, the first one
	// included, and before the connection's token expires, to
	// re-authenticate on the open connection; so the connection outlives
	// each token. A call that fails is retried until the token expires;
	// the server then closes the connection and the client logs in again
	// with the source's next token. A token the server refuses at login
	// ends the client with an error matching ErrBadToken.
	TokenSource func(ctx context.Context) (string, error)
	TLS         *tls.Config
	// LastUserSeq is the device's position in its sync timeline, as the app
	// saved it; entries after it are delivered.
	LastUserSeq uint64
	// FromNewest: deliver only entries after the newest at login (tail).
	FromNewest bool
	// NoReconnect: report a lost connection instead of reconnecting.
	NoReconnect bool
	// KeepAlive is how often an idle connection pings the server (default
	// DefaultKeepAlive, 2 s; negative: never). It bounds how long the
	// client takes to notice a restarted server, which answers the first
	// packet of an old connection with a stateless reset; then the client
	// reconnects at once. Longer periods save mobile radio wake-ups and
	// battery (each ping is one small packet each way) at the price of a
	// later notice; keep it at most a third of IdleTimeout.
	KeepAlive time.Duration
	// IdleTimeout: a connection that hears nothing from the server this
	// long is taken for dead (default DefaultIdleTimeout, 8 s; QUIC uses
	// the smaller of the client's and the server's). It is how the client
	// notices a server that is gone and not back (a crash without restart,
	// a lost network): the time until it reconnects elsewhere. Shorter
	// ends connections over a patchy mobile network more often (each one
	// a new handshake and a sync from the last user seq, nothing lost);
	// an app in the background can use KeepAlive 10 s and IdleTimeout
	// 30 s, or close the connection and rely on push notifications.
	IdleTimeout time.Duration
	Logger      *slog.Logger
	Client      string // sent in Hello, for the server's logs
	// OnConnState, when set, is told when the connection is lost and the
	// client starts reconnecting, and when it has reconnected and logged
	// in again (not for Dial's first connection, nor when the client stops
	// for good: Err says why). It is called from the client's reconnecting
	// goroutine, one call at a time: it must return quickly and must not
	// call Close. It may run while another goroutine calls Close (Close
	// then waits for it to return), so it must not wait for a lock that
	// the caller of Close may hold. Once Close has begun no call starts:
	// a reconnection that completes during Close is closed unreported.
	OnConnState func(ConnState)
}

// ConnState is a change of a client's connection, for Config.OnConnState.
type ConnState struct {
	// Connected: true when the client has reconnected and logged in,
	// false when its connection was lost and it is reconnecting.
	Connected bool
	// Addr is the server's address: the one that was lost, or the one
	// that answered the reconnection.
	Addr string
	// Err says why the connection was lost (when Connected is false).
	Err error
	// LastUserSeq is the last user seq delivered on Entries: after a
	// reconnection, the timeline resumes after it.
	LastUserSeq uint64
}

// PinnedTLS trusts exactly the certificate(s) in pem (the server's
// self-signed certificate, or a CA).
func PinnedTLS(pem []byte) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("client: no certificate in the given PEM")
	}
	return &tls.Config{RootCAs: pool}, nil
}

// InsecureTLS accepts any server certificate (tests, local tries).
func InsecureTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }

// Entry is one entry of the device's sync timeline.
type Entry struct {
	UserSeq uint64
	Type    string
	Message proto.Message // *eventspb.MessagePointer, *eventspb.ReadMarkerMoved, ...
	// Gap: entries before this one expired (retention) before the device
	// saw them; rebuild the conversation list rather than trust old state.
	Gap bool
}

// Change says that a read-fanout group the user belongs to (a group above
// the server's write-fanout threshold, which writes no sync entry per
// message) reached Seq: page its history or refresh its list line. An
// empty Conversation means that such notices were coalesced away: refresh
// the conversation list.
type Change struct {
	Conversation string
	Seq          uint64
}

// Client is one device's connection. Its methods are safe for concurrent use.
type Client struct {
	cfg     Config
	entries chan Entry
	changes chan Change
	chmu    sync.Mutex // a session's reader may still hear a notice while Close closes changes
	chDone  bool
	closed  chan struct{}
	stopped chan struct{} // closed when the client stops for good (final is set)
	once    sync.Once
	endOnce sync.Once // closes entries and changes
	wg      sync.WaitGroup

	stateMu sync.Mutex // held by an OnConnState call, so Close can wait for it

	mu      sync.Mutex
	sess    *session
	ready   chan struct{} // closed when sess is set
	welcome *wire.Welcome
	final   error // why the client stopped reconnecting

	nextID  atomic.Uint64
	last    atomic.Uint64 // last user seq delivered to Entries
	notify  chan uint64   // newest seq heard of (coalesced)
	pending atomic.Pointer[wire.Notify]
	addrAt  atomic.Int32 // index of the address that answered last (addrs.go)
}

// ErrClosed is returned by calls on a closed client.
var ErrClosed = errors.New("client: closed")

// ErrBadToken matches (errors.Is) the error of a client whose token the
// server refused or let expire (a *wire.Error with code 102): Dial returns
// it, and Err and every call after the client stopped.
var ErrBadToken = wire.ErrBadToken

// Dial connects and authenticates; an error here (bad token, no server) is
// returned as is. Afterwards the client reconnects by itself.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.TLS == nil {
		cfg.TLS = &tls.Config{}
	}
	if cfg.Client == "" {
		cfg.Client = "imsync-go/1"
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = DefaultKeepAlive
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	c := &Client{
		cfg:     cfg,
		entries: make(chan Entry, 256),
		changes: make(chan Change, 64),
		closed:  make(chan struct{}),
		stopped: make(chan struct{}),
		ready:   make(chan struct{}),
		notify:  make(chan uint64, 1),
	}
	c.last.Store(cfg.LastUserSeq)
	s, w, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	if cfg.FromNewest {
		c.last.Store(w.UserSeq)
	}
	c.install(s, w)
	c.wg.Add(2)
	go c.supervise(s)
	go c.syncLoop()
	go func() { // a client that stops for good closes its channels
		c.wg.Wait()
		c.end()
	}()
	return c, nil
}

// Welcome is the server's answer to the latest login: the user, the newest
// user seq and a first page of the conversations that changed since
// LastUserSeq (Changed returns them all).
func (c *Client) Welcome() *wire.Welcome {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.welcome
}

// Entries delivers the sync timeline after LastUserSeq, in order, each
// entry once. It is closed by Close, and when the client stops for good
// (the server refused or expired its token, or the connection was lost
// with NoReconnect): Err then says why.
func (c *Client) Entries() <-chan Entry { return c.entries }

// Err says why the client stopped for good: a *wire.Error with code 102
// (wire.CodeUnauthorized) when the server refused the token or it
// expired, the connection's error when it was lost with NoReconnect,
// ErrClosed after Close, nil while the client runs or reconnects.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.final != nil {
		return c.final
	}
	select {
	case <-c.closed:
		return ErrClosed
	default:
		return nil
	}
}

// Changes delivers notices of read-fanout groups (see Change). They are
// hints, not part of the timeline: when the channel is full a notice is
// dropped, so a reader that comes back after a while should refresh its
// conversation list. It is closed with Entries.
func (c *Client) Changes() <-chan Change { return c.changes }

func (c *Client) change(ch Change) {
	c.chmu.Lock()
	defer c.chmu.Unlock()
	if c.chDone {
		return
	}
	select {
	case c.changes <- ch:
	default:
	}
}

// LastUserSeq is the last user seq delivered on Entries.
func (c *Client) LastUserSeq() uint64 { return c.last.Load() }

// Close ends the connection and the background work.
func (c *Client) Close() error {
	c.once.Do(func() {
		c.mu.Lock()
		close(c.closed) // under mu: install sees it or is seen here
		s := c.sess
		c.mu.Unlock()
		c.stateMu.Lock() // a callback that began before: let it end
		c.stateMu.Unlock()
		if s != nil {
			s.close(ErrClosed)
		}
		c.wg.Wait()
		c.end()
	})
	return nil
}

// end closes Entries and Changes, once the goroutines that feed them are
// gone.
func (c *Client) end() {
	c.endOnce.Do(func() {
		close(c.entries)
		c.chmu.Lock()
		c.chDone = true
		close(c.changes)
		c.chmu.Unlock()
	})
}

// install makes s the current session; false (s left unused) when the
// client was closed meanwhile.
func (c *Client) install(s *session, w *wire.Welcome) bool {
	c.mu.Lock()
	select {
	case <-c.closed:
		c.mu.Unlock()
		return false
	default:
	}
	s.start(w)
	c.welcome = w
	select {
	case <-s.done: // lost already: supervise reconnects
	default:
		c.sess = s
		close(c.ready)
	}
	c.mu.Unlock()
	c.hear(w.UserSeq)
	return true
}

// forget clears s as the current session: calls wait for the next one.
func (c *Client) forget(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess == s {
		c.sess = nil
		c.ready = make(chan struct{})
	}
}

// stop records why the client will not reconnect; waiting calls return it,
// and the sync loop ends (then Entries closes).
func (c *Client) stop(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.final = err
	if c.sess == nil {
		close(c.ready)
	}
	close(c.stopped)
}

// finalError is the error that ends the client when a session ended with
// cause: the server closed it because the token expired or was refused.
func finalError(cause error) error {
	var app *quic.ApplicationError
	if errors.As(cause, &app) && app.Remote && app.ErrorCode == wire.CodeUnauthorized {
		return &wire.Error{Code: wire.CodeUnauthorized, Message: app.ErrorMessage}
	}
	return nil
}

// hear records that the timeline reached seq (from a push or a welcome).
func (c *Client) hear(seq uint64) {
	for {
		select {
		case old := <-c.notify:
			seq = max(seq, old)
		default:
		}
		select {
		case c.notify <- seq:
			return
		default:
		}
	}
}

// supervise waits for the session to end and reconnects with back-off.
func (c *Client) supervise(s *session) {
	defer c.wg.Done()
	for {
		select {
		case <-s.done:
		case <-c.closed:
			s.close(ErrClosed) // installed while Close ran
			return
		}
		c.cfg.Logger.Debug("connection lost", "err", s.err)
		if err := finalError(s.err); err != nil && c.cfg.TokenSource == nil {
			c.stop(err) // a refused token will not get better
			return
		}
		if c.cfg.NoReconnect {
			c.stop(s.err)
			return
		}
		if !c.connState(ConnState{Addr: s.qc.RemoteAddr().String(), Err: s.err}) {
			return // ended by Close: nothing to report
		}
		c.passOver()
		backoff := 50 * time.Millisecond
		for {
			select {
			case <-c.closed:
				return
			case <-time.After(backoff):
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			next, w, err := c.connect(ctx)
			cancel()
			if err == nil {
				if !c.install(next, w) { // Close ran during the reconnection
					next.close(ErrClosed)
					return
				}
				s = next
				c.connState(ConnState{Connected: true, Addr: next.qc.RemoteAddr().String()})
				break
			}
			c.cfg.Logger.Debug("reconnect failed", "err", err)
			var we *wire.Error
			if errors.As(err, &we) && we.Code == wire.CodeUnauthorized {
				c.stop(err) // a refused token will not get better
				return
			}
			backoff = min(max(backoff*2, 100*time.Millisecond), 5*time.Second)
		}
	}
}

// connState tells Config.OnConnState, if set, of a change, unless Close
// has begun (then it says false). The check and the call are one step
// under stateMu, which Close takes after closing c.closed.
func (c *Client) connState(st ConnState) bool {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	select {
	case <-c.closed:
		return false
	default:
	}
	if f := c.cfg.OnConnState; f != nil {
		st.LastUserSeq = c.last.Load()
		f(st)
	}
	return true
}

// session waits for a live connection.
func (c *Client) session(ctx context.Context) (*session, error) {
	for {
		c.mu.Lock()
		s, ready, final := c.sess, c.ready, c.final
		c.mu.Unlock()
		if s != nil {
			return s, nil
		}
		if final != nil {
			return nil, final
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.closed:
			return nil, ErrClosed
		}
	}
}

// syncLoop turns "the timeline reached seq" into delivered entries: it
// applies an inline entry that follows the last one and pulls any gap.
func (c *Client) syncLoop() {
	defer c.wg.Done()
	for {
		var seq uint64
		select {
		case seq = <-c.notify:
		case <-c.closed:
			return
		case <-c.stopped:
			return
		}
		push := c.pending.Swap(nil)
		switch nextStep(c.last.Load(), push, seq) {
		case stepNone:
			continue
		case stepApply: // the push is exactly the next entry
			if !c.deliver(push.Entry, false) {
				return
			}
			continue
		}
		for c.last.Load() < seq {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			page, err := c.Sync(ctx, c.last.Load(), 500)
			cancel()
			if err != nil {
				select {
				case <-c.closed:
					return
				case <-c.stopped:
					return
				case <-time.After(200 * time.Millisecond):
				}
				continue
			}
			apply, gap := mergePage(c.last.Load(), page.Entries)
			if len(apply) == 0 {
				break
			}
			for i, e := range apply {
				if !c.deliver(e, gap && i == 0) {
					return
				}
			}
		}
	}
}

func (c *Client) deliver(e *eventspb.SyncEntry, gap bool) bool {
	m, err := decode(e.Type, e.Data)
	if err != nil {
		c.cfg.Logger.Warn("undecodable entry", "seq", e.UserSeq, "err", err)
	}
	select {
	case c.entries <- Entry{UserSeq: e.UserSeq, Type: e.Type, Message: m, Gap: gap}:
		c.last.Store(e.UserSeq)
		return true
	case <-c.closed:
		return false
	}
}

func decode(typ string, data []byte) (proto.Message, error) {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName("imsync.events.v1." + typ))
	if err != nil {
		return nil, fmt.Errorf("unknown entry type %q", typ)
	}
	m := mt.New().Interface()
	return m, proto.Unmarshal(data, m)
}

// Ack tells the server that this device applied its timeline up to seq.
func (c *Client) Ack(ctx context.Context, seq uint64) error {
	s, err := c.session(ctx)
	if err != nil {
		return err
	}
	return s.writeControl(&wire.ClientControl{Control: &wire.ClientControl_Ack{Ack: &wire.Ack{UserSeq: seq}}})
}

func (c *Client) connect(ctx context.Context) (*session, *wire.Welcome, error) {
	t := c.cfg.TLS.Clone()
	t.NextProtos = []string{ALPN}
	t.MinVersion = tls.VersionTLS13
	qc, err := c.dial(ctx, t, &quic.Config{MaxIdleTimeout: c.cfg.IdleTimeout, KeepAlivePeriod: max(c.cfg.KeepAlive, 0)})
	if err != nil {
		return nil, nil, err
	}
	s := newSession(c, qc)
	fail := func(err error) (*session, *wire.Welcome, error) {
		qc.CloseWithError(0, "")
		return nil, nil, err
	}
	if s.control, err = qc.OpenStreamSync(ctx); err != nil {
		return fail(err)
	}
	token := c.cfg.Token
	if c.cfg.TokenSource != nil {
		if token, err = c.cfg.TokenSource(ctx); err != nil {
			return fail(fmt.Errorf("client: token source: %w", err))
		}
	}
	if err := wire.WriteFrame(s.control, &wire.Hello{Token: token, LastUserSeq: c.last.Load(), Client: c.cfg.Client}); err != nil {
		return fail(err)
	}
	rd := wire.NewReader(s.control, wire.DefaultMaxFrameSize)
	var first wire.ServerPush
	if dl, ok := ctx.Deadline(); ok {
		s.control.SetReadDeadline(dl)
	}
	if err := rd.Read(&first); err != nil {
		return fail(fmt.Errorf("client: login: %w", err))
	}
	s.control.SetReadDeadline(time.Time{})
	if e := first.GetError(); e != nil {
		return fail(e)
	}
	w := first.GetWelcome()
	if w == nil {
		return fail(errors.New("client: server did not welcome"))
	}
	st, err := qc.OpenStreamSync(ctx)
	if err != nil {
		return fail(err)
	}
	s.main = newRequests(st, s)
	push, err := qc.AcceptUniStream(ctx) // the server's notifications
	if err != nil {
		return fail(fmt.Errorf("client: no push stream: %w", err))
	}
	go s.readControl(rd)                                             // errors; ends with the connection
	go s.readControl(wire.NewReader(push, wire.DefaultMaxFrameSize)) // notifications
	return s, w, nil
}
