package esdb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	client "github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/imsync/imsync/events"
	// The client's gossip.proto clashes with protoactor-go's; see the package.
	_ "github.com/imsync/imsync/events/protoconflict"
)

// Options configure a Store. The zero value is ready to use.
type Options struct {
	// Logger receives the client's own log lines, at debug level
	// (default: discarded).
	Logger *slog.Logger
	// Lazy skips the check that the server answers: Open starts nothing,
	// and the first call connects (see Ping). A process that starts a
	// protoactor-go cluster member after opening the store needs it:
	// starting the member replaces gRPC's global logger, which a client
	// already connected may be reading.
	Lazy bool
}

// Store is an events.Store on an EventStoreDB or KurrentDB server, through
// the official Go client. It is safe for concurrent use.
type Store struct {
	cfg    client.Configuration
	log    *slog.Logger
	ctx    context.Context // cancelled by Close: ends calls in flight
	cancel context.CancelFunc
	done   <-chan struct{} // ctx.Done()

	mu      sync.Mutex
	client  *client.Client
	calls   *sync.WaitGroup // calls running inside client
	gone    chan struct{}   // closed when client is replaced
	closed  bool
	healthy bool   // the last call reached the server
	probe   *probe // the check running while !healthy
	subs    map[*subscription]struct{}
}

// probe is one check that the server answers, which every call waits for
// while the store does not know that it does.
type probe struct {
	done chan struct{}
	err  error
}

var _ events.Store = (*Store)(nil)

// Open connects to the server that url names (an EventStoreDB connection
// string: esdb://host:2113?tls=false, esdb+discover://..., with TLS and
// credentials settings as the client takes them) and checks that it
// answers.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	cfg, err := client.ParseConnectionString(url)
	if err != nil {
		return nil, fmt.Errorf("%w: EventStoreDB connection string: %v", events.ErrInvalidArgument, err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.Logger = func(level client.LogLevel, format string, args ...any) {
		log.Debug("esdb client: "+fmt.Sprintf(format, args...), "level", string(level))
	}
	s := &Store{cfg: *cfg, log: log, subs: map[*subscription]struct{}{}, calls: new(sync.WaitGroup), gone: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.done = s.ctx.Done()
	if s.client, err = s.newClient(); err != nil {
		return nil, err
	}
	if opts.Lazy {
		return s, nil
	}
	if err := s.Ping(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Ping checks that the server answers.
func (s *Store) Ping(ctx context.Context) error {
	s.mu.Lock()
	s.healthy = false // check now, even if the last call went through
	s.mu.Unlock()
	return s.ready(ctx)
}

func (s *Store) newClient() (*client.Client, error) {
	cfg := s.cfg
	c, err := client.NewClient(&cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: EventStoreDB client: %v", events.ErrInvalidArgument, err)
	}
	return c, nil
}

// Close ends every subscription and the connection. Calls after Close
// return events.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	subs := s.subs
	s.subs = nil
	c, calls := s.client, s.calls
	s.mu.Unlock()
	s.cancel()
	for sub := range subs {
		sub.Close()
	}
	// The client must not be closed under a call that is about to hand it a
	// request (it would panic): calls end quickly once s.ctx is cancelled.
	// (Calls stuck in clients that gave up are not waited for: those
	// clients are left open.)
	drained := make(chan struct{})
	go func() {
		calls.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-time.After(5 * time.Second):
		s.log.Debug("esdb: calls still inside the client at Close; leaving it open")
		return nil
	}
	return c.Close()
}

// ready returns once the store knows the server answers: at once when the
// last call reached it; otherwise after one check, shared by every caller
// meanwhile. While the server is away, calls thus fail with
// ErrUnavailable after one check instead of piling up inside the client —
// where a call can stay stuck for good when the client gives up (it stops
// serving requests after its discovery attempts fail).
func (s *Store) ready(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return events.ErrClosed
	}
	if s.healthy {
		s.mu.Unlock()
		return nil
	}
	p := s.probe
	if p == nil {
		p = &probe{done: make(chan struct{})}
		s.probe = p
		go s.runProbe(p)
	}
	s.mu.Unlock()
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return events.ErrClosed
	}
}

// ping reads a stream: any answer, "stream not found" included, shows the
// server is there.
func ping(ctx context.Context, c *client.Client) error {
	rs, err := c.ReadStream(ctx, "imsync-ping", client.ReadStreamOptions{}, 1)
	if err == nil {
		_, err = drain(rs)
	}
	if hasCode(err, client.ErrorCodeResourceNotFound) {
		return nil
	}
	return err
}

func (s *Store) runProbe(p *probe) {
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	err := s.call(ctx, ping)
	if hasCode(err, client.ErrorCodeConnectionClosed) || errors.Is(err, errClientGone) {
		err = s.call(ctx, ping) // with the client that replaced the one that gave up
	}
	s.mu.Lock()
	s.probe = nil
	s.healthy = err == nil
	s.mu.Unlock()
	if err != nil {
		if s.isClosed() {
			err = events.ErrClosed
		} else if mapped := s.mapErr(context.Background(), "reach", "the server", err); errors.Is(mapped, events.ErrUnavailable) {
			err = mapped
		} else {
			err = fmt.Errorf("%w: %v", events.ErrUnavailable, mapped)
		}
	}
	p.err = err
	close(p.done)
}

// do runs fn with the client once the server is known to answer (see
// ready). A call that failed before anything was sent, because the client
// gave up, is made once more with a new client.
func (s *Store) do(ctx context.Context, fn func(ctx context.Context, c *client.Client) error) error {
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.ready(ctx); err != nil {
			return err
		}
		err := s.call(ctx, fn)
		if attempt > 0 || !hasCode(err, client.ErrorCodeConnectionClosed) {
			return err
		}
	}
}

// call runs fn with the current client in its own goroutine and waits for
// it, for ctx, for Close, or for the client's replacement. The client does
// not honour ctx everywhere (finding the server, reporting a dropped
// connection), and a call waiting there when the client gives up stays
// there for good; call keeps that away from the caller, who gets
// errClientGone when the client is replaced. An error that says the server
// is away makes the next calls check first (ready); a client that gave up
// is replaced.
func (s *Store) call(ctx context.Context, fn func(ctx context.Context, c *client.Client) error) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return events.ErrClosed
	}
	c, calls, gone := s.client, s.calls, s.gone
	calls.Add(1)
	s.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		defer calls.Done()
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("%w: EventStoreDB client: %v", events.ErrUnavailable, r)
			}
		}()
		callCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		stop := context.AfterFunc(s.ctx, cancel)
		defer stop()
		done <- fn(callCtx, c)
	}()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return events.ErrClosed
	case <-gone:
		select {
		case err = <-done:
		default:
			return errClientGone
		}
	}
	if err != nil && ctx.Err() == nil && unreachable(err) {
		s.mu.Lock()
		s.healthy = false
		if hasCode(err, client.ErrorCodeConnectionClosed) && s.client == c && !s.closed {
			s.replaceLocked()
		}
		s.mu.Unlock()
	}
	return err
}

// unreachable reports whether err says the server could not be reached.
func unreachable(err error) bool {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true // a request stream broke under a send
	}
	var e *client.Error
	if errors.As(err, &e) {
		switch e.Code() {
		case client.ErrorUnavailable, client.ErrorCodeConnectionClosed, client.ErrorCodeNotLeader, client.ErrorCodeDeadlineExceeded:
			return true
		}
	}
	st, ok := status.FromError(err)
	return ok && (st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded)
}

// replaceLocked swaps out the client, which has given up for good: after
// a failed discovery (the server stayed away for all its attempts) it
// answers every later call with "connection closed". The old client is
// not closed: a call still stuck inside it would panic (it stays stuck;
// ready keeps that rare).
func (s *Store) replaceLocked() {
	next, err := s.newClient()
	if err != nil {
		return
	}
	s.client, s.calls = next, new(sync.WaitGroup)
	close(s.gone)
	s.gone = make(chan struct{})
	s.log.Debug("esdb: new client after the previous one gave up")
}

// errClientGone answers a call still inside a client that gave up when it
// was replaced: the call may or may not have reached the server.
var errClientGone = fmt.Errorf("%w: the EventStoreDB client gave up with the call inside it", events.ErrUnavailable)

func hasCode(err error, code client.ErrorCode) bool {
	var e *client.Error
	return errors.As(err, &e) && e.Code() == code
}

func (s *Store) isClosed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}
