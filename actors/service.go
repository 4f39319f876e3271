package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/test"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
)

// Config configures a Service. Store is required; the rest has defaults.
type Config struct {
	Store  events.Store
	Limits Limits
	// Now is the clock of the rules (recall windows, timestamps).
	Now func() time.Time
	// PassivateAfter: an idle grain stops after this long and is rebuilt
	// from its stream when next needed (default 2 minutes).
	PassivateAfter time.Duration
	// RequestTimeout bounds a call that has no context deadline (default 10 s).
	RequestTimeout time.Duration
	// Logger (default: discard). protoactor-go's own logs go here too,
	// one level down (its Info is Debug here).
	Logger *slog.Logger
	// Metrics connects the grains to a metrics system (default: none).
	Metrics Metrics

	// Cluster membership. The default is a single member in this process.
	// Members that share a ClusterName and a Provider (for tests:
	// test.NewTestProvider over one shared test.NewInMemAgent()) form one
	// cluster; grains live on whichever member the cluster places them.
	ClusterName string
	Provider    cluster.ClusterProvider
	Host        string // remote address (default 127.0.0.1)
	Port        int    // 0: any free port
	// HeartbeatExpiration: a member silent this long is taken for dead and
	// its grains re-activate elsewhere (default 20 s, protoactor-go's).
	HeartbeatExpiration time.Duration

	// SyncRetention, if positive, is the $maxAge of every inbox stream (the
	// sync timeline): entries older than this are dropped; a device that was
	// away longer sees a gap and recovers through the conversation list. User
	// grains set it when they load. Zero leaves the inbox streams' metadata
	// alone (entries are kept for ever unless set otherwise).
	SyncRetention time.Duration
	// SnapshotEvery: a user or conversation grain writes a snapshot of its
	// state after this many new events (default 1000), besides when it
	// passivates.
	SnapshotEvery int

	// ReadFanoutNotifyInterval: a read-fanout group tells its members with
	// online devices that it changed at most once per this interval
	// (default 250 ms), times one more for every 10,000 such members.
	ReadFanoutNotifyInterval time.Duration

	// BeforeDeliver, if set, is called before each fanout delivery; an
	// error fails that delivery (it is retried). For tests of failures.
	BeforeDeliver func(conversation, user string) error
	// NoFanoutWatch disables the $all watcher that re-drives unfinished
	// fanout after a restart (tests that simulate a crash use it).
	NoFanoutWatch bool
	// Extensions: checks before a message is decided, custom message
	// kinds, reactors after the commit (docs/extending.md).
	Extensions Extensions
}

// Service is the API that the transport and the CLI call: every operation
// of the product, on grains of a protoactor-go cluster.
//
// All methods honour their context's deadline and cancellation, and return
// *Failure errors (test them with errors.Is(err, ErrNotFound) and the like).
type Service struct {
	cfg     Config
	store   events.Store
	system  *actor.ActorSystem
	cluster *cluster.Cluster
	log     *slog.Logger
	watch   *fanoutWatch
	closing sync.Once
	counts  memberCounts
	// users holds the PIDs of the user grains active on this member when
	// there is a sync retention: Close stops them first so that they write
	// their snapshots.
	users sync.Map

	// Config.Extensions, compiled (extend.go).
	ext      *extensions
	reactors *reactorSet
	// conns: this member's device connections (see remote_sink.go).
	conns attachments
	// view: this member's latest placement, for grains to check they own
	// their identity (owned.go).
	view placementView
	// waiting: the grain requests in flight, by the member expected to
	// answer them (owned.go).
	waiting waiting
	// shared: other members may activate this member's grains too (a
	// Provider was given), so a grain checks its stream before answering
	// from its state alone (catchUp in journal.go).
	shared bool
}

// Start starts a cluster member with the conversation, user and device
// grains and returns the service on top of it.
func Start(cfg Config) (*Service, error) {
	if cfg.Store == nil {
		return nil, errors.New("actors: Config.Store is required")
	}
	cfg.Limits = cfg.Limits.orDefaults()
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PassivateAfter <= 0 {
		cfg.PassivateAfter = 2 * time.Minute
	}
	if cfg.ReadFanoutNotifyInterval <= 0 {
		cfg.ReadFanoutNotifyInterval = 250 * time.Millisecond
	}
	if cfg.SnapshotEvery <= 0 {
		cfg.SnapshotEvery = 1000
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ClusterName == "" {
		cfg.ClusterName = "imsync"
	}
	shared := cfg.Provider != nil
	if !shared {
		cfg.Provider = test.NewTestProvider(test.NewInMemAgent())
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	ext, err := cfg.Extensions.compile()
	if err != nil {
		return nil, err
	}
	cfg.Limits.ext = ext
	s := &Service{cfg: cfg, store: cfg.Store, log: cfg.Logger, ext: ext, shared: shared}
	acfg := actor.NewConfig()
	acfg.LoggerFactory = protoactorLogger(cfg.Logger)
	if cfg.Metrics.MeterProvider != nil {
		acfg.MetricsEnabled, acfg.MetricsProvider = true, cfg.Metrics.MeterProvider
	}
	s.system = actor.NewActorSystemWithConfig(acfg)
	owned := actor.WithReceiverMiddleware(s.ownedOnly) // owned.go
	kinds := []*cluster.Kind{
		cluster.NewKind(kindConversation, actor.PropsFromProducer(func() actor.Actor { return &conversationGrain{svc: s} }, owned)),
		cluster.NewKind(kindUser, actor.PropsFromProducer(func() actor.Actor { return &userGrain{svc: s} }, owned)),
		cluster.NewKind(kindDevice, actor.PropsFromProducer(func() actor.Actor { return &deviceGrain{svc: s} }, owned)),
	}
	opts := []cluster.ConfigOption{cluster.WithKinds(kinds...), cluster.WithRequestTimeout(cfg.RequestTimeout)}
	if cfg.HeartbeatExpiration > 0 {
		opts = append(opts, cluster.WithHeartbeatExpiration(cfg.HeartbeatExpiration))
	}
	ccfg := cluster.Configure(cfg.ClusterName, cfg.Provider, newPlacementLookup(), remote.Configure(cfg.Host, cfg.Port), opts...)
	s.cluster = cluster.New(s.system, ccfg)
	s.followTopology()
	if err := startMember(s.cluster); err != nil {
		s.system.Shutdown()
		return nil, err
	}
	if !cfg.NoFanoutWatch {
		s.watch = startFanoutWatch(s)
	}
	if len(ext.reactors) > 0 {
		s.reactors = startReactors(s, ext.reactors)
	}
	return s, nil
}

// Close leaves the cluster; the store stays open (it is the caller's).
func (s *Service) Close() error {
	s.closing.Do(func() {
		s.reactors.stop() // they act through the service: first
		s.conns.stop()
		if s.watch != nil {
			s.watch.stop()
		}
		var stopped []actor.Future
		s.users.Range(func(pid, _ any) bool {
			stopped = append(stopped, s.system.Root.PoisonFuture(pid.(*actor.PID)))
			return true
		})
		for _, f := range stopped {
			f.Wait()
		}
		// Graceful leaving hands identities over to other members (and sleeps
		// two seconds for it); alone, there is no one to hand over to.
		graceful := s.cluster.MemberList.Length() > 1
		s.cluster.Shutdown(graceful)
		if !graceful && s.shared {
			// protoactor-go tells the provider only on a graceful leave: a
			// lone member would stay registered (in etcd, until its lease
			// expires) and keep its provider's connections. (The default
			// provider lives and dies with this member.)
			if err := s.cfg.Provider.Shutdown(false); err != nil {
				s.log.Warn("membership provider did not shut down", "err", err)
			}
		}
	})
	return nil
}

// Members is how many members the cluster has, as this member sees it.
func (s *Service) Members() int { return s.cluster.MemberList.Length() }

// Host returns the address of the member hosting a grain (diagnostics).
func (s *Service) Host(kind, identity string) string {
	if pid := s.cluster.Get(identity, kind); pid != nil {
		return pid.Address
	}
	return ""
}

// Address is this member's address.
func (s *Service) Address() string { return s.system.Address() }

// request calls a grain and turns a *Failure reply into an error.
//
// A request can be lost when it reaches a grain in the instant it
// passivates (protoactor-go drops what is left in a stopping actor's
// mailbox), so each attempt gets at most attemptTimeout and is repeated
// while the deadline allows. Every grain message is safe to repeat: writes
// carry ids or are idempotent by rule (see Send for messages without a
// client id).
func (s *Service) request(ctx context.Context, identity, kind string, msg proto.Message) (proto.Message, error) {
	deadline := time.Now().Add(s.cfg.RequestTimeout)
	if dl, ok := ctx.Deadline(); ok {
		deadline = dl
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, fail(Code_UNAVAILABLE, "%s %s: %v", kind, identity, context.DeadlineExceeded)
		}
		res, err := s.attempt(ctx, identity, kind, msg, min(left, attemptTimeout))
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			continue
		}
		switch v := res.(type) {
		case *Failure:
			return nil, v
		case proto.Message:
			return v, nil
		}
		return nil, fail(Code_UNAVAILABLE, "%s %s answered %T", kind, identity, res)
	}
}

// attemptTimeout bounds one try of a grain request.
const attemptTimeout = 3 * time.Second

func (s *Service) attempt(ctx context.Context, identity, kind string, msg proto.Message, timeout time.Duration) (any, error) {
	gone := s.waiting.add(s.view.owner(identity, kind, s.system.Address()), nil)
	defer s.waiting.remove(gone)
	if ctx.Done() == nil && gone == nil {
		// Nothing can cancel the caller (fanout, background work): no need
		// for a goroutine to watch it.
		return s.cluster.Request(identity, kind, msg, cluster.WithTimeout(timeout))
	}
	type result struct {
		res any
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := s.cluster.Request(identity, kind, msg, cluster.WithTimeout(timeout))
		done <- result{res, err}
	}()
	select {
	case r := <-done:
		return r.res, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-gone.gone():
		s.counts.failedOver.Add(1)
		return nil, errOwnerLeft
	}
}

// deliverFuture hands one fanout batch to a user grain and returns the
// future of its answer (one attempt: a failed batch is retried whole by the
// conversation, and the user grain drops what it already has).
// done must be called once the future is answered: a future waiting on a
// member that leaves is answered at once with UNAVAILABLE (waiting).
func (s *Service) deliverFuture(conv, user string, items []*InboxItem) (fut actor.Future, done func(), err error) {
	if h := s.cfg.BeforeDeliver; h != nil {
		if err := h(conv, user); err != nil {
			return nil, nil, err
		}
	}
	fut = s.requestGrainFuture(user, kindUser, &Deliver{ConversationId: conv, Items: items}, attemptTimeout)
	x := s.waiting.add(s.view.owner(user, kindUser, s.system.Address()), fut.PID())
	return fut, func() { s.waiting.remove(x) }, nil
}

// Finding a grain's PID that this member has not cached means asking its
// owner's placement actor, and waiting up to a request timeout when that
// member just died: a grain must not wait like that on its own goroutine
// (its other callers would time out behind it). requestGrainFuture and
// sendGrain find the PID on another goroutine when it is not cached.

// requestGrainFuture asks a grain and returns the future of its answer
// (UNAVAILABLE when the grain cannot be reached), without blocking.
func (s *Service) requestGrainFuture(identity, kind string, msg proto.Message, timeout time.Duration) actor.Future {
	if pid, ok := s.cluster.PidCache.Get(identity, kind); ok {
		return s.system.Root.RequestFuture(pid, msg, timeout)
	}
	fut := actor.NewFuture(s.system, timeout)
	go func() {
		res, err := s.cluster.Request(identity, kind, msg, cluster.WithTimeout(timeout))
		if err != nil {
			res = fail(Code_UNAVAILABLE, "%s %s: %v", kind, identity, err)
		}
		s.system.Root.Send(fut.PID(), res)
	}()
	return fut
}

// sendGrain sends msg to a grain without blocking.
func (s *Service) sendGrain(identity, kind string, msg proto.Message) {
	if pid, ok := s.cluster.PidCache.Get(identity, kind); ok {
		s.system.Root.Send(pid, msg)
		return
	}
	go func() {
		if pid := s.cluster.Get(identity, kind); pid != nil {
			s.cluster.PidCache.Set(identity, kind, pid)
			s.system.Root.Send(pid, msg)
		}
	}()
}

func call[T proto.Message](s *Service, ctx context.Context, identity, kind string, msg proto.Message) (T, error) {
	var zero T
	res, err := s.request(ctx, identity, kind, msg)
	if err != nil {
		return zero, err
	}
	out, ok := res.(T)
	if !ok {
		return zero, fail(Code_UNAVAILABLE, "%s %s answered %T", kind, identity, res)
	}
	return out, nil
}

func sortStrings(s []string) { slices.Sort(s) }

func validate(pairs ...string) error {
	for i := 0; i < len(pairs); i += 2 {
		if err := ValidateID(pairs[i], pairs[i+1]); err != nil {
			return err
		}
	}
	return nil
}

// OpenDirect returns the direct conversation of a and b, creating it on
// first use; either side finds the same one.
func (s *Service) OpenDirect(ctx context.Context, a, b string) (string, error) {
	if err := validate("user", a, "user", b); err != nil {
		return "", err
	}
	if a == b {
		return "", fail(Code_INVALID, "a direct conversation needs two different users")
	}
	id := DirectID(a, b)
	_, err := call[*Written](s, ctx, id, kindConversation, &CreateConversation{Kind: eventspb.ConversationKind_DIRECT, Creator: a, Members: []string{b}})
	return id, err
}

// CreateGroup creates a group with the creator as admin. id may be empty
// (a new one is chosen) or a caller's id, which makes a retried create
// idempotent.
func (s *Service) CreateGroup(ctx context.Context, id, creator, name string, members []string) (string, error) {
	if id == "" {
		id = "g-" + uuid.NewString()
	}
	if err := validateConvID(id); err != nil {
		return "", err
	}
	if _, _, direct := splitDirect(id); direct {
		return "", idNotAvailable(id) // reserved for direct conversations
	}
	_, err := call[*Written](s, ctx, id, kindConversation, &CreateConversation{Kind: eventspb.ConversationKind_GROUP, Creator: creator, Name: name, Members: members})
	return id, err
}

// AddMember adds user to a group (actor must be an admin).
func (s *Service) AddMember(ctx context.Context, actorID, conv, user string) (uint64, error) {
	return s.changeMember(ctx, actorID, conv, user, true)
}

// RemoveMember removes user from a group (an admin, or the user leaving).
func (s *Service) RemoveMember(ctx context.Context, actorID, conv, user string) (uint64, error) {
	return s.changeMember(ctx, actorID, conv, user, false)
}

func (s *Service) changeMember(ctx context.Context, actorID, conv, user string, add bool) (uint64, error) {
	if err := validateConvID(conv); err != nil {
		return 0, err
	}
	if err := validate("user", actorID, "user", user); err != nil {
		return 0, err
	}
	w, err := call[*Written](s, ctx, conv, kindConversation, &ChangeMember{Actor: actorID, User: user, Add: add})
	if err != nil {
		return 0, err
	}
	return w.Seq, nil
}

// SendRequest is one message to send.
type SendRequest struct {
	Conversation string
	Sender       string
	Device       string
	ClientMsgID  string // makes a retry idempotent: the same id returns the first seq
	Kind         string // default "text"
	Body         []byte
	ReplyTo      uint64
	Mentions     []string
	// System: the sender need not be a member (a system or bot message
	// from the app backend). Only trusted callers set it.
	System bool
	// Metadata: at most MaxMetadataKeys entries of MaxMetadataSize bytes in
	// all, stored with the message (checks may add some).
	Metadata map[string]string
	// ToUser, instead of Conversation: the message goes to the direct
	// conversation of Sender and ToUser, which it creates on first use.
	// The creation and the message are decided together: a message the
	// rules refuse creates nothing.
	ToUser string
}

// SendResult says where a message landed.
type SendResult struct {
	Conversation string // where it was sent (for ToUser, the direct conversation)
	Seq          uint64
	Duplicate    bool // a retry of a message already stored at Seq
}

// Send appends a message; it returns once the message is durable.
func (s *Service) Send(ctx context.Context, r SendRequest) (SendResult, error) {
	if r.ToUser != "" {
		if r.Conversation != "" {
			return SendResult{}, fail(Code_INVALID, "a message goes to a conversation or to a user, not both")
		}
		if err := validate("user", r.Sender, "user", r.ToUser); err != nil {
			return SendResult{}, err
		}
		if r.ToUser == r.Sender {
			return SendResult{}, fail(Code_INVALID, "a direct conversation needs two different users")
		}
		r.Conversation = DirectID(r.Sender, r.ToUser)
	}
	if err := validateConvID(r.Conversation); err != nil {
		return SendResult{}, err
	}
	if err := ValidateID("user", r.Sender); err != nil {
		return SendResult{}, err
	}
	cid := r.ClientMsgID
	if cid == "" {
		cid = "auto-" + uuid.NewString() // lets request repeat the call safely
	}
	w, err := call[*Written](s, ctx, r.Conversation, kindConversation, &SendMessage{
		Sender: r.Sender, Device: r.Device, ClientMsgId: cid, Kind: r.Kind,
		Body: r.Body, ReplyTo: r.ReplyTo, Mentions: r.Mentions, System: r.System, Metadata: r.Metadata, ToUser: r.ToUser,
	})
	if err != nil {
		return SendResult{Conversation: r.Conversation}, err
	}
	return SendResult{Conversation: r.Conversation, Seq: w.Seq, Duplicate: w.Duplicate}, nil
}

// Recall recalls message seq (its sender, or a group admin, within the window).
func (s *Service) Recall(ctx context.Context, actorID, conv string, seq uint64) (uint64, error) {
	if err := validateConvID(conv); err != nil {
		return 0, err
	}
	w, err := call[*Written](s, ctx, conv, kindConversation, &RecallMessage{Actor: actorID, Seq: seq})
	if err != nil {
		return 0, err
	}
	return w.Seq, nil
}

// Edit replaces the body of message seq (same rights as Recall).
func (s *Service) Edit(ctx context.Context, actorID, conv string, seq uint64, body []byte) (uint64, error) {
	if err := validateConvID(conv); err != nil {
		return 0, err
	}
	w, err := call[*Written](s, ctx, conv, kindConversation, &EditMessage{Actor: actorID, Seq: seq, Body: body})
	if err != nil {
		return 0, err
	}
	return w.Seq, nil
}

// Conversation returns what a member sees of a conversation, with the
// first page of its members (see ConversationMembers).
func (s *Service) Conversation(ctx context.Context, reader, conv string) (*eventspb.ConversationInfo, error) {
	return s.ConversationMembers(ctx, reader, conv, "", 0)
}

// ConversationMembers is Conversation with the page of at most limit
// members (0: MaxMembersLimit) whose ids follow after; MoreMembers says
// that another page follows the last one listed.
func (s *Service) ConversationMembers(ctx context.Context, reader, conv, after string, limit int) (*eventspb.ConversationInfo, error) {
	if err := validateConvID(conv); err != nil {
		return nil, err
	}
	if limit < 0 || limit > MaxMembersLimit {
		return nil, fail(Code_INVALID, "member page limit must be 0..%d", MaxMembersLimit)
	}
	return call[*eventspb.ConversationInfo](s, ctx, conv, kindConversation, &GetConversation{Reader: reader, MembersAfter: after, MembersLimit: uint32(limit)})
}

// IsMember reports whether user is a member of conv now, as the
// conversation itself knows it (its grain decides; a user's conversation
// list learns of a removal a moment later). An unknown conversation is
// not an error: the user is not a member of it.
func (s *Service) IsMember(ctx context.Context, user, conv string) (bool, error) {
	if err := validateConvID(conv); err != nil {
		return false, err
	}
	_, err := call[*eventspb.ConversationInfo](s, ctx, conv, kindConversation, &GetConversation{Reader: user, NoMembers: true})
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// MarkRead moves the user's read marker in conv to seq (forward only) and
// returns the marker that results: seq, or the marker already set if it was
// further (an older read never moves it back). The user's other devices
// learn it through the sync timeline.
func (s *Service) MarkRead(ctx context.Context, user, device, conv string, seq uint64) (uint64, error) {
	if err := validateConvID(conv); err != nil {
		return 0, err
	}
	info, err := call[*eventspb.ConversationInfo](s, ctx, conv, kindConversation, &GetConversation{Reader: user, NoMembers: true, SeenSeq: seq})
	if err != nil {
		return 0, err
	}
	if f := decideReadTarget(info, seq); f != nil {
		return 0, f
	}
	mark := &MarkRead{ConversationId: conv, Seq: seq, Device: device}
	w, err := call[*Written](s, ctx, user, kindUser, mark)
	if errors.Is(err, ErrNotFound) {
		// A member whose joining is still being fanned out: wait for it.
		if err := s.EnsureFanout(ctx, conv, info.LastSeq); err != nil {
			return 0, err
		}
		w, err = call[*Written](s, ctx, user, kindUser, mark)
	}
	if err != nil {
		return 0, err
	}
	return w.Seq, nil
}

// HistoryQuery selects a page of a conversation: the latest Limit messages
// (zero Before and After), those before a seq, or those after one (from
// the first message when After is 0 and FromStart is set). A page holds at
// most Limit messages (1..MaxHistoryLimit) and MaxPageBytes; History.more
// says whether more follow.
type HistoryQuery struct {
	Before, After uint64
	FromStart     bool
	Limit         int
}

// History pages a conversation's messages, newest first (oldest first with After).
func (s *Service) History(ctx context.Context, reader, conv string, q HistoryQuery) (*eventspb.History, error) {
	if err := validateConvID(conv); err != nil {
		return nil, err
	}
	if q.Before > 0 && (q.After > 0 || q.FromStart) {
		return nil, fail(Code_INVALID, "history takes Before or After, not both")
	}
	return call[*eventspb.History](s, ctx, conv, kindConversation, &GetHistory{Reader: reader, BeforeSeq: q.Before, AfterSeq: q.After, FromStart: q.FromStart, Limit: uint32(max(0, min(q.Limit, 1<<20)))})
}

// Sync returns the user's sync timeline after afterUserSeq.
func (s *Service) Sync(ctx context.Context, user string, afterUserSeq uint64, limit int) (*eventspb.SyncPage, error) {
	return s.SyncPage(ctx, user, SyncQuery{After: afterUserSeq, Limit: limit})
}

// SyncQuery selects a page of a sync timeline: the entries after After,
// at most Limit (1..MaxSyncLimit). Heard is the newest user seq the device
// heard of (pushed to it, or from its last session), when known.
type SyncQuery struct {
	After uint64
	Limit int
	Heard uint64
}

// SyncPage returns a page of the user's sync timeline.
func (s *Service) SyncPage(ctx context.Context, user string, q SyncQuery) (*eventspb.SyncPage, error) {
	if err := ValidateID("user", user); err != nil {
		return nil, err
	}
	return call[*eventspb.SyncPage](s, ctx, user, kindUser, &SyncRequest{AfterUserSeq: q.After, Limit: uint32(max(0, min(q.Limit, 1<<20))), AtLeast: q.Heard})
}

// ListQuery selects a page of a user's conversation list, newest activity
// first: the lines after Cursor (a previous page's NextCursor; empty for
// the first page), at most Limit (1..MaxListLimit; 0: DefaultListLimit)
// and MaxPageBytes of them, only those changed after user seq ChangedAfter
// when it is set, only Conversation's line when that is set.
type ListQuery struct {
	Cursor       string
	Limit        int
	ChangedAfter uint64
	Conversation string
	Heard        uint64 // as SyncQuery.Heard
}

// ConversationPage returns one page of the user's conversation list.
func (s *Service) ConversationPage(ctx context.Context, user string, q ListQuery) (*eventspb.ConversationList, error) {
	if err := ValidateID("user", user); err != nil {
		return nil, err
	}
	if q.Limit == 0 {
		q.Limit = DefaultListLimit
	}
	return call[*eventspb.ConversationList](s, ctx, user, kindUser, &ListConversations{
		Cursor: q.Cursor, Limit: uint32(max(0, min(q.Limit, 1<<20))), ChangedAfter: q.ChangedAfter, Conversation: q.Conversation,
		AtLeast: q.Heard,
	})
}

// Conversations returns the user's whole conversation list, page after
// page (for callers in this process; devices page it themselves).
func (s *Service) Conversations(ctx context.Context, user string) (*eventspb.ConversationList, error) {
	var all *eventspb.ConversationList
	q := ListQuery{Limit: MaxListLimit}
	for {
		page, err := s.ConversationPage(ctx, user, q)
		if err != nil {
			return nil, err
		}
		if all == nil {
			all = page
		} else {
			all.Conversations = append(all.Conversations, page.Conversations...)
		}
		if !page.More {
			all.More, all.NextCursor = false, ""
			return all, nil
		}
		q.Cursor = page.NextCursor
	}
}

// DeviceSink receives the pushes of one device connection: the user's sync
// timeline reached p.UserSeq, and p.Entry is its newest entry when small
// (nil otherwise: the device pulls); or, with p.ConversationId set, a
// read-fanout group reached p.ConvSeq. Push is called from one goroutine
// at a time and must not block; the transport queues and coalesces.
type DeviceSink interface {
	Push(p *Push)
}

// Attachment is one connection of a device, attached by AttachDevice.
type Attachment struct {
	// State is the device's state when it was attached.
	State *DeviceState

	svc          *Service
	user, device string
	pid          *actor.PID
	once         sync.Once
	err          error
}

// AttachDevice adds a connection of a device: from now on the user's
// pushes reach sink, as they reach the device's other connections, until
// Detach. A device may have any number of connections (the transport caps
// them per user).
func (s *Service) AttachDevice(ctx context.Context, user, device string, sink DeviceSink) (*Attachment, error) {
	if err := validate("user", user, "device", device); err != nil {
		return nil, err
	}
	if sink == nil {
		return nil, fail(Code_INVALID, "AttachDevice needs a sink")
	}
	pid := s.system.Root.Spawn(actor.PropsFromFunc(connectionActor(user, device, sink)))
	st, err := call[*DeviceState](s, ctx, deviceIdentity(user, device), kindDevice, &AttachDevice{Address: pid.Address, Id: pid.Id})
	if err != nil {
		// If the grain did attach it, it forgets it when it stops.
		s.system.Root.Stop(pid)
		return nil, err
	}
	a := &Attachment{State: st, svc: s, user: user, device: device, pid: pid}
	s.conns.add(a)
	return a, nil
}

// Detach ends the attachment: its sink gets no more pushes, and the
// device's other connections keep theirs. Calling it again returns the
// first result.
func (a *Attachment) Detach(ctx context.Context) error {
	a.once.Do(func() {
		a.svc.conns.remove(a)
		_, a.err = call[*DeviceState](a.svc, ctx, deviceIdentity(a.user, a.device), kindDevice, &DetachDevice{Address: a.pid.Address, Id: a.pid.Id})
		// Stopping the actor also detaches it, should the call have failed.
		a.svc.system.Root.Stop(a.pid)
	})
	return a.err
}

// AckDevice records that a device has applied its sync timeline up to userSeq.
func (s *Service) AckDevice(ctx context.Context, user, device string, userSeq uint64) (*DeviceState, error) {
	if err := validate("user", user, "device", device); err != nil {
		return nil, err
	}
	return call[*DeviceState](s, ctx, deviceIdentity(user, device), kindDevice, &AckDevice{UserSeq: userSeq})
}

// Device returns a device's acknowledged user seq and whether it is online.
func (s *Service) Device(ctx context.Context, user, device string) (*DeviceState, error) {
	if err := validate("user", user, "device", device); err != nil {
		return nil, err
	}
	return call[*DeviceState](s, ctx, deviceIdentity(user, device), kindDevice, &DeviceState{})
}

// EnsureFanout waits until conv has fanned out every event up to seq.
func (s *Service) EnsureFanout(ctx context.Context, conv string, seq uint64) error {
	_, err := call[*Written](s, ctx, conv, kindConversation, &EnsureFanout{Seq: seq})
	return err
}

// startMember joins the cluster; protoactor-go panics when the member
// provider refuses (etcd unreachable, another member at this address):
// that is an error for the caller.
func startMember(c *cluster.Cluster) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(error); ok {
				err = e
			} else {
				err = fmt.Errorf("joining the cluster: %v", r)
			}
		}
	}()
	c.StartMember()
	return nil
}
