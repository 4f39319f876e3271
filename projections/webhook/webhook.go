package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/projections"
)

// Config configures a Sender. Store, Checkpoints and URL are required.
type Config struct {
	Store       events.Store
	Checkpoints projections.CheckpointStore
	// Name is the checkpoint's name (default "webhook").
	Name string
	// URL receives the batches (http or https).
	URL string
	// Secret, if set, signs every body (SignatureHeader).
	Secret []byte
	// Client sends the requests (default: a client with a 10 s timeout).
	// Redirects are never followed, whatever its CheckRedirect: a 3xx
	// does not acknowledge a batch (see post).
	Client *http.Client

	// MaxBatch is the most events in one POST (default 100).
	MaxBatch int
	// Linger: a batch that is not full is sent once no event came for
	// this long (default 20 ms).
	Linger time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts at a
	// batch the receiver did not acknowledge (defaults 100 ms and 30 s; the
	// wait doubles each time, with jitter).
	MinBackoff, MaxBackoff time.Duration
	// SaveIdle: events that produce nothing to send (acks, inbox entries)
	// move the checkpoint once no event came for this long (default 1 s).
	SaveIdle time.Duration

	// Devices tells whether a device is online (see DeviceStatus).
	Devices DeviceStatus
	// PushInterval: while a device stays behind, device.pending fires for
	// it at most once per this interval (default 30 s).
	PushInterval time.Duration
	// NoPush turns device.pending events off.
	NoPush bool

	// From is where a sender without a checkpoint starts (default: the
	// start of $all: every event ever committed).
	From   events.SubscribeFrom
	Logger *slog.Logger
}

// Sender posts committed events to a webhook, from a checkpoint, one batch
// at a time. See the package doc.
type Sender struct {
	cfg   Config
	push  pushState
	mu    sync.Mutex
	acked events.Position // last event of the last acknowledged batch
	sent  int             // batches acknowledged
}

// New checks cfg and returns a Sender ready to Run.
func New(cfg Config) (*Sender, error) {
	if cfg.Store == nil || cfg.Checkpoints == nil {
		return nil, errors.New("webhook: Config needs Store and Checkpoints")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("webhook: URL %q: want an http:// or https:// URL", cfg.URL)
	}
	if cfg.Name == "" {
		cfg.Name = "webhook"
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	// Following a redirect would turn the POST into a GET without the body
	// (301, 302, 303), whose 2xx would acknowledge a batch nobody got, or
	// send the signed events to wherever the Location points (307, 308).
	noRedirects := *cfg.Client
	noRedirects.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	cfg.Client = &noRedirects
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 100
	}
	if cfg.Linger <= 0 {
		cfg.Linger = 20 * time.Millisecond
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(cfg.MinBackoff, 30*time.Second)
	}
	if cfg.SaveIdle <= 0 {
		cfg.SaveIdle = time.Second
	}
	if cfg.PushInterval <= 0 {
		cfg.PushInterval = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Sender{cfg: cfg}, nil
}

// Acknowledged is the position of the last event of the last batch the
// receiver acknowledged in this run, and how many batches it acknowledged.
func (s *Sender) Acknowledged() (events.Position, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acked, s.sent
}

// streams the sender reads: conversations (posted), and devices and
// inboxes (for the offline push).
func (s *Sender) filter() events.Filter {
	if s.cfg.NoPush {
		return events.Filter{StreamPrefixes: []string{events.ConversationPrefix}}
	}
	return events.Filter{StreamPrefixes: []string{events.ConversationPrefix, events.InboxPrefix, events.DevicePrefix}}
}

// Run delivers every committed event after the checkpoint, then live ones,
// until ctx ends (it then returns ctx's error). A batch is retried until
// the receiver acknowledges it with a 2xx; only then does the checkpoint
// move past it. So after a crash the batch in flight is sent again, and
// nothing else is.
func (s *Sender) Run(ctx context.Context) error {
	name := s.cfg.Name
	cp, ok, err := s.cfg.Checkpoints.Load(ctx, name)
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	if err := s.push.restore(cp.State); err != nil {
		return fmt.Errorf("webhook: checkpoint %s state: %w", name, err)
	}
	from := s.cfg.From
	if ok {
		from = events.SubscribeAfterPosition(cp.Position)
	}
	sub, err := s.cfg.Store.SubscribeToAll(ctx, events.SubscribeAllOptions{From: from, Filter: s.filter()})
	if err != nil {
		return fmt.Errorf("webhook: subscribe: %w", err)
	}
	defer sub.Close()

	var (
		batch   []Event
		since   time.Time       // when the batch got its first event
		last    events.Position // of the last event read
		unsaved bool            // events read past the checkpoint
	)
	save := func() error {
		st, err := s.push.snapshot()
		if err != nil {
			return err
		}
		if err := s.cfg.Checkpoints.Save(context.WithoutCancel(ctx), name, projections.Checkpoint{Position: last, State: st}); err != nil {
			return fmt.Errorf("webhook: save checkpoint: %w", err)
		}
		unsaved = false
		return nil
	}
	flush := func() error {
		if len(batch) > 0 {
			if err := s.deliver(ctx, batch); err != nil {
				return err
			}
			s.mu.Lock()
			s.acked, s.sent = last, s.sent+1
			s.mu.Unlock()
			batch = batch[:0]
		}
		return save()
	}
	for {
		rctx, cancel := ctx, context.CancelFunc(func() {})
		switch {
		case len(batch) > 0:
			// A steady trickle still goes out within maxDelay of its first event.
			rctx, cancel = context.WithTimeout(ctx, min(s.cfg.Linger, time.Until(since.Add(maxDelay*s.cfg.Linger))))
		case unsaved:
			rctx, cancel = context.WithTimeout(ctx, s.cfg.SaveIdle)
		}
		re, err := sub.Recv(rctx)
		cancel()
		if ctx.Err() != nil {
			// What is not acknowledged is read again from the store next time.
			return ctx.Err()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			if err := flush(); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("webhook: subscription after %s: %w", last, err)
		}
		e, err := projections.Decode(re)
		if err != nil {
			// Never skip: the receiver gets the event undecoded.
			s.cfg.Logger.Error("webhook: cannot decode an event", "stream", re.Stream, "revision", re.Revision, "err", err)
		}
		had := len(batch)
		if strings.HasPrefix(e.Stream, events.ConversationPrefix) {
			batch = append(batch, conversationEvent(e))
		} else if !s.cfg.NoPush {
			batch = append(batch, s.push.pushEvents(ctx, e, s.cfg.Devices, s.cfg.PushInterval)...)
		}
		if had == 0 && len(batch) > 0 {
			since = time.Now()
		}
		last, unsaved = re.Position, true
		if len(batch) >= s.cfg.MaxBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
}

// maxDelay: a batch goes out at the latest this many Lingers after its
// first event, however steadily events keep coming.
const maxDelay = 10

// deliver posts one batch until a 2xx answers it or ctx ends.
func (s *Sender) deliver(ctx context.Context, batch []Event) error {
	body, err := json.Marshal(Batch{Events: batch})
	if err != nil {
		return fmt.Errorf("webhook: encode batch: %w", err)
	}
	var sig string
	if len(s.cfg.Secret) > 0 {
		sig = Sign(s.cfg.Secret, body)
	}
	wait := s.cfg.MinBackoff
	for attempt := 1; ; attempt++ {
		err := s.post(ctx, body, sig)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.cfg.Logger.Warn("webhook: batch not acknowledged; retrying", "url", s.cfg.URL, "attempt", attempt, "events", len(batch), "err", err)
		// Full jitter over the upper half: receivers coming back are not
		// hit by every sender at once.
		d := wait/2 + rand.N(wait/2+1)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(wait*2, s.cfg.MaxBackoff)
	}
}

func (s *Sender) post(ctx context.Context, body []byte, sig string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "imsync-webhook/1")
	if sig != "" {
		req.Header.Set(SignatureHeader, sig)
	}
	res, err := s.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	if res.StatusCode >= 300 && res.StatusCode <= 399 {
		return fmt.Errorf("receiver answered %s (to %q): redirects are not followed, configure the URL they point to", res.Status, res.Header.Get("Location"))
	}
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return fmt.Errorf("receiver answered %s", res.Status)
	}
	return nil
}
