package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
)

// RevocationsStream is the stream of TokensRevoked and DeviceDisconnected
// events that OpenRevocations keeps and every node sharing the store
// follows.
const RevocationsStream = "revocations"

// revocationsTimeout bounds one read or append of the stream.
const revocationsTimeout = 15 * time.Second

// revLog is the store side of Revocations: it appends revocations and
// follows the stream for those of other nodes.
type revLog struct {
	store  events.Store
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	broken error     // why the stream is not followed now (nil: it is)
	since  time.Time // when it broke
}

// OpenRevocations loads the revocations recorded in store's
// RevocationsStream, adds those of dir's RevocationsFile the stream does
// not hold yet (the file of an older version: nothing revoked there becomes
// valid again; the file itself is left as it was and no longer written),
// and follows the stream until Close: revocations appended by other nodes
// apply here as soon as the store delivers them. A nil logger discards.
func OpenRevocations(ctx context.Context, store events.Store, dir string, logger *slog.Logger) (*Revocations, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Revocations{users: map[string]time.Time{}}
	last, err := r.load(ctx, store)
	if err != nil {
		return nil, err
	}
	fromFile, err := readRevocationsFile(dir)
	if err != nil {
		return nil, err
	}
	l := &revLog{store: store, log: logger}
	var migrate []events.EventData
	for user, at := range fromFile {
		// The stream keeps milliseconds and the file nanoseconds: compared
		// untruncated, every file time is newer than its migrated copy and
		// would be appended again at every start.
		at = at.Truncate(time.Millisecond)
		if err := validMigratedRevocation(user, at, time.Now()); err != nil {
			// Never appended: the stream holds only what the server would
			// have recorded itself, and nothing invalid comes back at the
			// next start.
			logger.Warn("an entry of the data directory's revocations file is not valid; skipped",
				"file", RevocationsFile, "user", user, "revoked_at", at, "err", err)
			delete(fromFile, user)
			continue
		}
		fromFile[user] = at
		if !at.After(r.users[user]) {
			continue
		}
		ev, err := revocationEvent(user, at)
		if err != nil {
			return nil, err
		}
		migrate = append(migrate, ev)
	}
	for len(migrate) > 0 {
		n := min(len(migrate), events.MaxAppendEvents)
		if _, err := store.AppendToStream(ctx, RevocationsStream, events.Any, migrate[:n]...); err != nil {
			return nil, fmt.Errorf("transport: move %s into the store: %w", RevocationsFile, err)
		}
		migrate = migrate[n:]
	}
	for user, at := range fromFile {
		r.apply(user, at)
	}
	if len(fromFile) > 0 {
		logger.Info("revocations of the data directory's file are in the store", "file", RevocationsFile, "users", len(fromFile))
	}
	r.stream = l
	l.follow(r, last)
	return r, nil
}

// maxRevocationAhead bounds how far in the future a migrated revocation
// may be: further on, it would refuse every token of the user for years.
const maxRevocationAhead = 24 * time.Hour

// validMigratedRevocation checks an entry of an older version's
// RevocationsFile: a valid user id, and a time after 1970 and not more
// than maxRevocationAhead after now.
func validMigratedRevocation(user string, at, now time.Time) error {
	if err := actors.ValidateID("user", user); err != nil {
		return err
	}
	if !at.After(time.Unix(0, 0)) {
		return fmt.Errorf("revocation time %s is not after 1970", at.UTC().Format(time.RFC3339Nano))
	}
	if at.After(now.Add(maxRevocationAhead)) {
		return fmt.Errorf("revocation time %s is more than %s ahead of now", at.UTC().Format(time.RFC3339Nano), maxRevocationAhead)
	}
	return nil
}

// revocationEvent encodes a TokensRevoked at millisecond precision (the
// refusal itself works in whole seconds).
func revocationEvent(user string, at time.Time) (events.EventData, error) {
	return events.Encode([16]byte{}, &eventspb.TokensRevoked{User: user, RevokedAtUnixMs: at.UnixMilli()})
}

// load reads the whole stream; it returns the next position to follow from.
func (r *Revocations) load(ctx context.Context, store events.Store) (events.SubscribeFrom, error) {
	from := events.SubscribeFromStart()
	for next := events.Revision(0); ; {
		c, cancel := context.WithTimeout(ctx, revocationsTimeout)
		page, err := store.ReadStream(c, RevocationsStream, events.ReadStreamOptions{From: next, Limit: 1000})
		cancel()
		if errors.Is(err, events.ErrStreamNotFound) {
			return from, nil
		}
		if err != nil {
			return from, fmt.Errorf("transport: read %s: %w", RevocationsStream, err)
		}
		for _, e := range page {
			// Disconnects are skipped: no connection here is older.
			if tr, ok := decodeStreamEvent(e).(*eventspb.TokensRevoked); ok {
				r.apply(tr.User, time.UnixMilli(tr.RevokedAtUnixMs).UTC())
			}
			next = e.Revision + 1
			from = events.SubscribeAfterRevision(e.Revision)
		}
		if len(page) < 1000 {
			return from, nil
		}
	}
}

// decodeStreamEvent returns a *TokensRevoked or *DeviceDisconnected, or
// nil for anything else (unknown or damaged).
func decodeStreamEvent(e events.RecordedEvent) any {
	m, err := events.Decode(e.Type, e.Data)
	if err != nil {
		return nil
	}
	switch m := m.(type) {
	case *eventspb.TokensRevoked:
		if m.User != "" {
			return m
		}
	case *eventspb.DeviceDisconnected:
		if m.User != "" && m.Device != "" {
			return m
		}
	}
	return nil
}

// append records one revocation durably.
func (l *revLog) append(user string, at time.Time) error {
	ev, err := revocationEvent(user, at)
	if err != nil {
		return err
	}
	return l.appendEvent(ev, "the revocation")
}

// appendDisconnect records a device disconnect durably.
func (l *revLog) appendDisconnect(user, device string, at time.Time) error {
	ev, err := events.Encode([16]byte{}, &eventspb.DeviceDisconnected{User: user, Device: device, AtUnixMs: at.UnixMilli()})
	if err != nil {
		return err
	}
	return l.appendEvent(ev, "the disconnect")
}

func (l *revLog) appendEvent(ev events.EventData, what string) error {
	ctx, cancel := context.WithTimeout(context.Background(), revocationsTimeout)
	defer cancel()
	if _, err := l.store.AppendToStream(ctx, RevocationsStream, events.Any, ev); err != nil {
		return fmt.Errorf("transport: record %s: %w", what, err)
	}
	return nil
}

// follow applies the stream's events after from, live, until stop; a
// broken subscription resumes after the last event applied.
func (l *revLog) follow(r *Revocations, from events.SubscribeFrom) {
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel, l.done = cancel, make(chan struct{})
	go func() {
		defer close(l.done)
		for ctx.Err() == nil {
			err := l.run(ctx, r, &from)
			if ctx.Err() != nil || errors.Is(err, events.ErrClosed) {
				return
			}
			l.setBroken(err)
			l.log.Warn("following token revocations: retrying", "stream", RevocationsStream, "err", err)
			t := time.NewTimer(time.Second)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
	}()
}

func (l *revLog) run(ctx context.Context, r *Revocations, from *events.SubscribeFrom) error {
	sub, err := l.store.SubscribeToStream(ctx, RevocationsStream, *from)
	if err != nil {
		return err
	}
	defer sub.Close()
	l.setBroken(nil)
	for {
		e, err := sub.Recv(ctx)
		if err != nil {
			return err
		}
		*from = events.SubscribeAfterRevision(e.Revision)
		switch m := decodeStreamEvent(e).(type) {
		case *eventspb.TokensRevoked:
			if at := time.UnixMilli(m.RevokedAtUnixMs).UTC(); r.apply(m.User, at) {
				r.notify(m.User, at, nil)
			}
		case *eventspb.DeviceDisconnected:
			r.notifyDisconnect(m.User, m.Device, time.UnixMilli(m.AtUnixMs).UTC())
		default:
			l.log.Warn("not a token revocation or disconnect; skipped", "stream", RevocationsStream, "revision", e.Revision, "type", e.Type)
		}
	}
}

// setBroken records why the stream is not followed (nil: it is again).
func (l *revLog) setBroken(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err == nil:
		l.broken = nil
	case l.broken == nil:
		l.broken, l.since = err, time.Now()
	default:
		l.broken = err // still broken since the first failure
	}
}

// FollowErr says why this node does not follow the revocations of the
// other nodes now (its subscription to RevocationsStream broke and has not
// been resumed yet): while it does not, tokens revoked through other nodes
// are still accepted here. Nil while it follows, and always in file mode.
func (r *Revocations) FollowErr() error {
	if r == nil || r.stream == nil {
		return nil
	}
	l := r.stream
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken == nil {
		return nil
	}
	return fmt.Errorf("not following the %s stream since %s: %w", RevocationsStream, l.since.UTC().Format(time.RFC3339), l.broken)
}

func (l *revLog) stop() {
	l.cancel()
	<-l.done
}
