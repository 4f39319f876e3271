package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/imsync/imsync/events"
)

// The control socket lets tools run beside a server that holds the
// embedded store's lock: `imsync export`, `replay`, `stats`, `store
// log|read` and `backup` ask the server for a consistent checkpoint of its
// store (events.Embedded.Checkpoint) and read that. It is a unix socket
// DIR/control.sock, mode 0600, and the server answers only peers of its
// own user id (where the system tells it), so only the data directory's
// owner can use it. One request per connection, one JSON line each way:
//
//	→ {"op":"checkpoint","dir":"/abs/path/that/does/not/exist"}
//	← {"position":1234}   or   {"error":"..."}
//
// `store log --follow` follows the live store through it: after the
// request and one reply line the server writes one event per line until
// the tool hangs up or the server stops.
//
//	→ {"op":"follow","from":1234,"prefixes":["conv-"]}
//	← {"position":0}   then   {"id":...,"stream":...,"position":1234,...}...

const controlSocketName = "control.sock"

func controlSocket(data string) string { return filepath.Join(data, controlSocketName) }

type controlRequest struct {
	Op       string   `json:"op"`
	Dir      string   `json:"dir,omitempty"`
	From     uint64   `json:"from,omitempty"`     // follow: first global position (0: the start)
	Prefixes []string `json:"prefixes,omitempty"` // follow: only streams with these prefixes
}

// followedEvent is one event of a follow, as it crosses the socket.
type followedEvent struct {
	ID       uuid.UUID `json:"id"`
	Type     string    `json:"type"`
	Data     []byte    `json:"data,omitempty"`
	Metadata []byte    `json:"metadata,omitempty"`
	Stream   string    `json:"stream"`
	Revision uint64    `json:"revision"`
	Position uint64    `json:"position"`
	Created  time.Time `json:"created"`
}

func (f followedEvent) recorded() events.RecordedEvent {
	return events.RecordedEvent{ID: f.ID, Type: f.Type, Data: f.Data, Metadata: f.Metadata, Stream: f.Stream,
		Revision: events.Revision(f.Revision), Position: events.Position{Commit: f.Position, Prepare: f.Position}, Created: f.Created}
}

type controlReply struct {
	Position uint64 `json:"position"`
	Error    string `json:"error,omitempty"`
}

// controlServer serves the control socket of a running server.
type controlServer struct {
	ln     net.Listener
	store  *events.Embedded
	logger *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startControl listens on data's control socket when the server keeps its
// events in the embedded store (nil otherwise: with --store the events are
// read through the remote store itself). The server holds the store's lock,
// so a socket file left by a killed server is stale and replaced.
func startControl(data string, store events.Store, logger *slog.Logger) (*controlServer, error) {
	emb, ok := store.(*events.Embedded)
	if !ok {
		return nil, nil
	}
	path := controlSocket(data)
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		// The server runs without it (a path too long for a unix socket,
		// say); tools beside it then say so.
		logger.Warn("control socket not available: export, replay, stats and backup need the server stopped", "err", err)
		return nil, nil
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("serve: control socket: %w", err)
	}
	c := &controlServer{ln: ln, store: emb, logger: logger}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.wg.Add(1)
	go c.serve()
	return c, nil
}

func (c *controlServer) serve() {
	defer c.wg.Done()
	for {
		conn, err := c.ln.Accept()
		if err != nil {
			return // closed
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer conn.Close()
			c.handle(conn)
		}()
	}
}

func (c *controlServer) handle(conn net.Conn) {
	reply := func(r controlReply) { json.NewEncoder(conn).Encode(r) }
	if err := checkPeer(conn); err != nil {
		c.logger.Warn("control socket: refused a peer", "err", err)
		reply(controlReply{Error: err.Error()})
		return
	}
	// A peer that never sends its request must not hold the server's stop.
	stop := context.AfterFunc(c.ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(io.LimitReader(conn, 64<<10)).ReadBytes('\n')
	if err != nil {
		return
	}
	conn.SetReadDeadline(time.Time{})
	var req controlRequest
	if err := json.Unmarshal(line, &req); err != nil {
		reply(controlReply{Error: "control: malformed request: " + err.Error()})
		return
	}
	switch req.Op {
	case "checkpoint":
		if !filepath.IsAbs(req.Dir) {
			reply(controlReply{Error: fmt.Sprintf("control: checkpoint directory %q is not absolute", req.Dir)})
			return
		}
		pos, err := c.store.Checkpoint(c.ctx, req.Dir)
		if err != nil {
			reply(controlReply{Error: err.Error()})
			return
		}
		c.logger.Info("control socket: checkpoint of the event store", "dir", req.Dir, "position", pos.Commit)
		reply(controlReply{Position: pos.Commit})
	case "follow":
		c.follow(conn, req, reply)
	default:
		reply(controlReply{Error: fmt.Sprintf("control: unknown op %q", req.Op)})
	}
}

// follow streams the store's events from req.From to conn until the peer
// hangs up (its half of the connection reaches EOF) or the server stops.
// Writes block while the tool is slow: the subscription is read only as
// fast as the tool takes the events, so nothing piles up in the server.
func (c *controlServer) follow(conn net.Conn, req controlRequest, reply func(controlReply)) {
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	go func() {
		io.Copy(io.Discard, conn) // returns when the tool hangs up
		cancel()
	}()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	start := events.SubscribeFromStart()
	if req.From > 0 {
		start = events.SubscribeAfterPosition(events.Position{Commit: req.From - 1, Prepare: req.From - 1})
	}
	sub, err := c.store.SubscribeToAll(ctx, events.SubscribeAllOptions{From: start, Filter: events.Filter{StreamPrefixes: req.Prefixes}})
	if err != nil {
		reply(controlReply{Error: err.Error()})
		return
	}
	defer sub.Close()
	reply(controlReply{})
	enc := json.NewEncoder(conn)
	for {
		e, err := sub.Recv(ctx)
		if err != nil {
			return // the tool hung up or the server stops; the tool sees the connection end
		}
		if err := enc.Encode(followedEvent{ID: e.ID, Type: e.Type, Data: e.Data, Metadata: e.Metadata, Stream: e.Stream,
			Revision: uint64(e.Revision), Position: e.Position.Commit, Created: e.Created}); err != nil {
			return
		}
	}
}

// followServer follows the store of the server running on data from
// position from (0: the start), calling fn for each event, until ctx ends
// (nil) or the server stops (an error that says so).
func followServer(ctx context.Context, data string, from uint64, prefixes []string, fn func(events.RecordedEvent) error) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", controlSocket(data))
	if err != nil {
		return fmt.Errorf("%w: %v", errNoControl, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if err := json.NewEncoder(conn).Encode(controlRequest{Op: "follow", From: from, Prefixes: prefixes}); err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	dec := json.NewDecoder(bufio.NewReader(conn))
	var rep controlReply
	if err := dec.Decode(&rep); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("control socket: %w", err)
	}
	if rep.Error != "" {
		return fmt.Errorf("the server refused to follow its store: %s", rep.Error)
	}
	last := from
	for {
		var f followedEvent
		if err := dec.Decode(&f); err != nil {
			if ctx.Err() != nil {
				return nil // interrupted: a normal end for --follow
			}
			return withStatus(exitUnavailable, "the server on %s stopped (%v); follow on with --from %d", data, err, last)
		}
		last = f.Position + 1
		if err := fn(f.recorded()); err != nil {
			return err
		}
	}
}

// close stops listening, waits for requests in flight and removes the
// socket file. A nil server closes as a no-op.
func (c *controlServer) close() {
	if c == nil {
		return
	}
	c.ln.Close() // removes the socket file (net.UnixListener unlinks on Close)
	c.cancel()
	c.wg.Wait()
}

// errNoControl: no server answers on the data directory's control socket.
var errNoControl = errors.New("no control socket")

// requestCheckpoint asks the server running on data for a checkpoint of
// its event store in dir (absolute; must not exist or be empty).
func requestCheckpoint(ctx context.Context, data, dir string) (events.Position, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", controlSocket(data))
	if err != nil {
		return events.Position{}, fmt.Errorf("%w: %v", errNoControl, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if err := json.NewEncoder(conn).Encode(controlRequest{Op: "checkpoint", Dir: dir}); err != nil {
		return events.Position{}, fmt.Errorf("control socket: %w", err)
	}
	var rep controlReply
	if err := json.NewDecoder(conn).Decode(&rep); err != nil {
		if ctx.Err() != nil {
			return events.Position{}, ctx.Err()
		}
		return events.Position{}, fmt.Errorf("control socket: %w", err)
	}
	if rep.Error != "" {
		return events.Position{}, fmt.Errorf("the server refused the checkpoint: %s", rep.Error)
	}
	return events.Position{Commit: rep.Position, Prepare: rep.Position}, nil
}
