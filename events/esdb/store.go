package esdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	client "github.com/EventStore/EventStore-Client-Go/v4/esdb"

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
	cfg  client.Configuration
	log  *slog.Logger
	done chan struct{} // closed by Close

	mu     sync.Mutex
	client *client.Client
	closed bool
	subs   map[*subscription]struct{}
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
	s := &Store{cfg: *cfg, log: log, done: make(chan struct{}), subs: map[*subscription]struct{}{}}
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
	// Any answer, "stream not found" included, shows the server is there.
	_, err := s.ReadStream(ctx, "imsync-ping", events.ReadStreamOptions{Limit: 1})
	if err != nil && !errors.Is(err, events.ErrStreamNotFound) {
		return err
	}
	return nil
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
	close(s.done)
	subs := s.subs
	s.subs = nil
	c := s.client
	s.mu.Unlock()
	for sub := range subs {
		sub.Close()
	}
	return c.Close()
}

// current returns the client in use.
func (s *Store) current() (*client.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, events.ErrClosed
	}
	return s.client, nil
}

// replace swaps out c once it has given up for good: after a failed
// discovery (the server was down for longer than its discovery attempts)
// the client answers every later call with "connection closed". Closing it
// also releases calls stuck inside it.
func (s *Store) replace(c *client.Client) {
	s.mu.Lock()
	if s.closed || s.client != c {
		s.mu.Unlock()
		return
	}
	next, err := s.newClient()
	if err != nil {
		s.mu.Unlock()
		return
	}
	s.client = next
	s.mu.Unlock()
	s.log.Debug("esdb: new client after the previous one gave up")
	c.Close()
}

// do runs fn with the client in its own goroutine and waits for it, for
// ctx, or for Close. The client does not honour ctx everywhere (finding
// the server, reporting a dropped connection) and can panic when closed
// under a call; do keeps both away from the caller. A call that failed
// before anything was sent, on a client that gave up, is made once more
// with a new client.
func (s *Store) do(ctx context.Context, fn func(ctx context.Context, c *client.Client) error) error {
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		c, err := s.current()
		if err != nil {
			return err
		}
		done := make(chan error, 1)
		go func() {
			defer func() {
				if r := recover(); r != nil {
					done <- fmt.Errorf("%w: EventStoreDB client: %v", events.ErrUnavailable, r)
				}
			}()
			done <- fn(ctx, c)
		}()
		select {
		case err = <-done:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return events.ErrClosed
		}
		if err == nil || !hasCode(err, client.ErrorCodeConnectionClosed) {
			return err
		}
		s.replace(c)
		if attempt > 0 {
			return err
		}
	}
}

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
