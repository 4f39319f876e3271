package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/transport/client"
	"github.com/imsync/imsync/transport/wire"
)

// clientFlags are the flags every client command shares.
type clientFlags struct {
	server, token, ca string
	insecure, json    bool
	timeout           time.Duration
	// onConnState, when set before dial, hears of reconnections.
	onConnState func(client.ConnState)
}

func (f *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.server, "server", "", "server `HOST:PORT`")
	fs.StringVar(&f.token, "token", "", "device token (imsync token mints one)")
	fs.StringVar(&f.ca, "ca", "", "certificate `FILE` to trust: the server's DATA/server.crt")
	fs.BoolVar(&f.insecure, "insecure", false, "trust any server certificate")
	fs.BoolVar(&f.json, "json", false, "print JSON, one object per line")
	fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "give up connecting after this long")
}

// newClientFlags is the flag set of a client command, with the shared flags.
func newClientFlags(name string) (*flag.FlagSet, *clientFlags) {
	fs := newFlagSet(name)
	cf := &clientFlags{}
	cf.register(fs)
	return fs, cf
}

func (f *clientFlags) printer(out io.Writer) printer { return printer{out: out, json: f.json} }

func (f *clientFlags) dial(ctx context.Context, last uint64, fromNewest bool) (*client.Client, error) {
	if f.server == "" || f.token == "" {
		return nil, fmt.Errorf("%w: --server and --token (or IMSYNC_SERVER and IMSYNC_TOKEN) are required", errUsage)
	}
	var t *tls.Config
	switch {
	case f.insecure:
		t = client.InsecureTLS()
	case f.ca != "":
		pem, err := os.ReadFile(f.ca)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w (the server's certificate is server.crt in its data directory)", err)
		}
		if t, err = client.PinnedTLS(pem); err != nil {
			return nil, fmt.Errorf("--ca %s: %w", f.ca, err)
		}
	default:
		t = &tls.Config{}
	}
	if f.timeout <= 0 {
		return nil, fmt.Errorf("%w: --timeout must be positive", errUsage)
	}
	dctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	c, err := client.Dial(dctx, client.Config{Addr: f.server, Token: f.token, TLS: t, LastUserSeq: last, FromNewest: fromNewest, Client: "imsync-cli/1", OnConnState: f.onConnState})
	if err != nil {
		return nil, explainDial(err, f.server, f.ca)
	}
	return c, nil
}

// oneRequest connects for a command that makes one request and gives up
// after a while: the client waits for a lost server to come back.
func (f *clientFlags) oneRequest(ctx context.Context) (*client.Client, context.Context, func(), error) {
	c, err := f.dial(ctx, 0, false)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	return c, ctx, func() { cancel(); c.Close() }, nil
}

// printer prints records as JSON lines or as key=value text.
//
// Text that other users wrote reaches the terminal escaped: a value holding
// a control character, a newline, a space, a quote, a backslash or invalid
// UTF-8 is printed as a Go-quoted string ("a\nb", "\x1b[2J", "\xff"), so no
// one can move the cursor, forge a line or hide bytes. In JSON, a []byte
// value (message text) that is valid UTF-8 is a string under its key; one
// that is not is base64 under KEY_base64 instead (text_base64), so invalid
// bytes stay visible instead of turning into U+FFFD.
type printer struct {
	out  io.Writer
	json bool
}

func (p printer) print(fields []string, rec map[string]any) {
	if p.json {
		b, _ := json.Marshal(jsonRecord(rec))
		fmt.Fprintln(p.out, string(b))
		return
	}
	var parts []string
	for _, f := range fields {
		if v, ok := rec[f]; ok && v != "" && v != nil {
			if b, isBytes := v.([]byte); isBytes && len(b) == 0 {
				continue
			}
			parts = append(parts, f+"="+textValue(v))
		}
	}
	fmt.Fprintln(p.out, strings.Join(parts, " "))
}

// textValue renders one value for text output (see printer).
func textValue(v any) string {
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case []byte:
		s = string(x)
	case []string:
		s = strings.Join(x, ",")
	default:
		return fmt.Sprint(v)
	}
	if !utf8.ValidString(s) {
		return strconv.Quote(s)
	}
	for _, r := range s {
		if r == ' ' || r == '"' || r == '\\' || !strconv.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// jsonRecord turns []byte values into strings, or into KEY_base64 when
// they are not valid UTF-8 (see printer).
func jsonRecord(rec map[string]any) map[string]any {
	out := make(map[string]any, len(rec))
	for k, v := range rec {
		if b, ok := v.([]byte); ok {
			if utf8.Valid(b) {
				out[k] = string(b)
			} else {
				out[k+"_base64"] = b // encoding/json writes []byte as standard base64
			}
			continue
		}
		out[k] = v
	}
	return out
}

// tailEnded is the error tail ends with when the client stopped for good
// (its channels closed): a refused or expired token says so.
func tailEnded(err error) error {
	var we *wire.Error
	switch {
	case errors.As(err, &we) && we.Code == wire.CodeUnauthorized:
		return withStatus(exitRefused, "tail: unauthorized (%d): %s; get a new token", we.Code, we.Message)
	case err != nil:
		return fmt.Errorf("tail: %w", err)
	}
	return errors.New("tail: the connection ended")
}

// tailConnNotice is tail's line for a change of its connection.
func tailConnNotice(st client.ConnState) string {
	if st.Connected {
		return fmt.Sprintf("imsync tail: reconnected to %s; resuming after user seq %d", st.Addr, st.LastUserSeq)
	}
	why := "no reason given"
	if st.Err != nil {
		why = strings.TrimPrefix(strings.TrimPrefix(st.Err.Error(), "client: connection lost: "), "client: ")
	}
	return fmt.Sprintf("imsync tail: connection to %s lost (%s); reconnecting", st.Addr, why)
}

var entryFields = []string{"user_seq", "type", "conversation", "seq", "sender", "text", "reply_to", "mentions", "user", "added", "recalled_seq", "edited_seq", "read_seq"}

// entryRecord flattens a sync entry for printing.
func entryRecord(e client.Entry) map[string]any {
	r := map[string]any{"user_seq": e.UserSeq, "type": e.Type}
	switch m := e.Message.(type) {
	case *eventspb.MessagePointer:
		r["conversation"], r["seq"], r["sender"] = m.ConversationId, m.Seq, m.Sender
		if m.Message != nil {
			r["text"], r["client_msg_id"] = m.Message.Body, m.Message.ClientMsgId
			addReply(r, m.Message)
		}
	case *eventspb.MembershipChanged:
		r["conversation"], r["seq"], r["user"], r["added"] = m.ConversationId, m.Seq, m.User, m.Added
	case *eventspb.RecallNotice:
		r["conversation"], r["seq"], r["recalled_seq"] = m.ConversationId, m.Seq, m.RecalledSeq
	case *eventspb.EditNotice:
		r["conversation"], r["seq"], r["edited_seq"], r["text"] = m.ConversationId, m.Seq, m.EditedSeq, m.Body
	case *eventspb.ReadMarkerMoved:
		r["conversation"], r["read_seq"] = m.ConversationId, m.ReadSeq
	}
	return r
}

// textArg is the message text a command was given: the argument itself,
// or standard input when it is "-" (one final newline dropped, as echo
// and editors add it).
func textArg(ctx context.Context, arg string) (string, error) {
	if arg != "-" {
		return arg, nil
	}
	const maxStdin = 4 << 20 // far above any body size a server accepts
	b, err := io.ReadAll(io.LimitReader(stdinOf(ctx), maxStdin+1))
	if err != nil {
		return "", fmt.Errorf("reading the text from standard input: %w", err)
	}
	if len(b) > maxStdin {
		return "", fmt.Errorf("%w: the text on standard input is over %d bytes", errUsage, maxStdin)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if s == "" {
		return "", fmt.Errorf("%w: standard input held no text", errUsage)
	}
	return s, nil
}

// runSend is `imsync send`.
func runSend(ctx context.Context, args []string, out io.Writer) error {
	fs, cf := newClientFlags("send")
	to := fs.String("to", "", "`USER` to message directly")
	conv := fs.String("conv", "", "conversation `ID`")
	id := fs.String("id", "", "client message `ID`: a retry with the same id is recognised, not duplicated (default: a new one, printed)")
	replyTo := fs.Uint64("reply-to", 0, "`SEQ` of the message of the conversation this one replies to")
	var mentions multiFlag
	fs.Var(&mentions, "mention", "`USER` mentioned, a member of the conversation (repeatable)")
	kind := fs.String("kind", "", "message `KIND` (default text; the server's extensions give kinds their rules)")
	var meta metaFlag
	fs.Var(&meta, "meta", "`KEY=VALUE` stored with the message (repeatable)")
	if err := parseFlags(ctx, fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 || (*to == "") == (*conv == "") {
		return fmt.Errorf("%w: send (--to USER | --conv ID) TEXT|-", errUsage)
	}
	text, err := textArg(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	c, ctx, done, err := cf.oneRequest(ctx)
	if err != nil {
		return err
	}
	defer done()
	cid := *id
	if cid == "" {
		cid = uuid.NewString()
	}
	r, err := c.Send(ctx, client.Message{To: *to, Conversation: *conv, ClientMsgID: cid, Text: text, ReplyTo: *replyTo, Mentions: mentions,
		Kind: *kind, Metadata: meta.m})
	if err != nil {
		return err
	}
	cf.printer(out).print([]string{"conversation", "seq", "client_msg_id", "duplicate"},
		map[string]any{"conversation": r.Conversation, "seq": r.Seq, "client_msg_id": cid, "duplicate": r.Duplicate})
	return nil
}

// metaFlag is send's repeatable --meta KEY=VALUE.
type metaFlag struct{ m map[string]string }

func (f *metaFlag) String() string {
	if f == nil {
		return ""
	}
	var kv []string
	for k, v := range f.m {
		kv = append(kv, k+"="+v)
	}
	return strings.Join(kv, ",")
}

func (f *metaFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	switch {
	case !ok || k == "":
		return fmt.Errorf("%q: want KEY=VALUE", s)
	case !utf8.ValidString(s):
		return fmt.Errorf("%q: keys and values are UTF-8 text", s)
	}
	if _, dup := f.m[k]; dup {
		return fmt.Errorf("key %q given twice", k)
	}
	if f.m == nil {
		f.m = map[string]string{}
	}
	f.m[k] = v
	return nil
}

// runEdit is `imsync edit`.
func runEdit(ctx context.Context, args []string, out io.Writer) error {
	return runOnMessage(ctx, args, out, "edit", "`SEQ` of your message to edit", true,
		func(ctx context.Context, c *client.Client, conv string, seq uint64, text string) ([]string, map[string]any, error) {
			s, err := c.Edit(ctx, conv, seq, []byte(text))
			return []string{"conversation", "seq", "edited_seq"}, map[string]any{"conversation": conv, "seq": s, "edited_seq": seq}, err
		})
}

// runRecall is `imsync recall`.
func runRecall(ctx context.Context, args []string, out io.Writer) error {
	return runOnMessage(ctx, args, out, "recall", "`SEQ` of your message to recall", false,
		func(ctx context.Context, c *client.Client, conv string, seq uint64, _ string) ([]string, map[string]any, error) {
			s, err := c.Recall(ctx, conv, seq)
			return []string{"conversation", "seq", "recalled_seq"}, map[string]any{"conversation": conv, "seq": s, "recalled_seq": seq}, err
		})
}

// runRead is `imsync read`.
func runRead(ctx context.Context, args []string, out io.Writer) error {
	return runOnMessage(ctx, args, out, "read", "`SEQ` read up to", false,
		func(ctx context.Context, c *client.Client, conv string, seq uint64, _ string) ([]string, map[string]any, error) {
			// The marker that results: an older seq leaves a further one in place.
			marker, err := c.MarkRead(ctx, conv, seq)
			return []string{"conversation", "read_seq"}, map[string]any{"conversation": conv, "read_seq": marker}, err
		})
}

// runOnMessage is a command that names one message with --conv and --seq
// (and, withText, takes TEXT|- as its argument): it makes one request with
// call and prints the record call returns.
func runOnMessage(ctx context.Context, args []string, out io.Writer, name, seqUsage string, withText bool,
	call func(ctx context.Context, c *client.Client, conv string, seq uint64, text string) ([]string, map[string]any, error)) error {
	fs, cf := newClientFlags(name)
	conv := fs.String("conv", "", "conversation `ID`")
	seq := fs.Uint64("seq", 0, seqUsage)
	if err := parseFlags(ctx, fs, args); err != nil {
		return err
	}
	usage, nargs := name+" --conv ID --seq N", 0
	if withText {
		usage, nargs = usage+" TEXT|-", 1
	}
	if *conv == "" || *seq == 0 || fs.NArg() != nargs {
		return fmt.Errorf("%w: %s", errUsage, usage)
	}
	var text string
	if withText {
		var err error
		if text, err = textArg(ctx, fs.Arg(0)); err != nil {
			return err
		}
	}
	c, ctx, done, err := cf.oneRequest(ctx)
	if err != nil {
		return err
	}
	defer done()
	fields, rec, err := call(ctx, c, *conv, *seq, text)
	if err != nil {
		return err
	}
	cf.printer(out).print(fields, rec)
	return nil
}

// runGroupCreate is `imsync group create`.
func runGroupCreate(ctx context.Context, args []string, out io.Writer) error {
	fs, cf := newClientFlags("group create")
	name := fs.String("name", "", "group `NAME`")
	members := fs.String("members", "", "comma-separated `USERS` besides you")
	if err := parseFlags(ctx, fs, args); err != nil {
		return err
	}
	if *name == "" || fs.NArg() != 0 {
		return fmt.Errorf("%w: group create --name NAME --members a,b,c", errUsage)
	}
	var ms []string
	for _, m := range strings.Split(*members, ",") {
		if m = strings.TrimSpace(m); m != "" {
			ms = append(ms, m)
		}
	}
	c, ctx, done, err := cf.oneRequest(ctx)
	if err != nil {
		return err
	}
	defer done()
	g, err := c.CreateGroup(ctx, "", *name, ms)
	if err != nil {
		return err
	}
	cf.printer(out).print([]string{"conversation"}, map[string]any{"conversation": g})
	return nil
}

// runGroupChange is `imsync group add` (add) or `group remove`.
func runGroupChange(add bool) func(context.Context, []string, io.Writer) error {
	name := "group remove"
	if add {
		name = "group add"
	}
	return func(ctx context.Context, args []string, out io.Writer) error {
		fs, cf := newClientFlags(name)
		conv := fs.String("conv", "", "group conversation `ID`")
		if err := parseFlags(ctx, fs, args); err != nil {
			return err
		}
		if *conv == "" || fs.NArg() != 1 {
			return fmt.Errorf("%w: %s --conv ID USER", errUsage, name)
		}
		c, ctx, done, err := cf.oneRequest(ctx)
		if err != nil {
			return err
		}
		defer done()
		var s uint64
		if add {
			s, err = c.AddMember(ctx, *conv, fs.Arg(0))
		} else {
			s, err = c.RemoveMember(ctx, *conv, fs.Arg(0))
		}
		if err != nil {
			return err
		}
		cf.printer(out).print([]string{"conversation", "seq"}, map[string]any{"conversation": *conv, "seq": s})
		return nil
	}
}

// runConvs is `imsync convs`.
func runConvs(ctx context.Context, args []string, out io.Writer) error {
	fs, cf := newClientFlags("convs")
	if err := parseFlags(ctx, fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("%w: convs takes no arguments", errUsage)
	}
	c, ctx, done, err := cf.oneRequest(ctx)
	if err != nil {
		return err
	}
	defer done()
	l, err := c.Conversations(ctx)
	if err != nil {
		return err
	}
	p := cf.printer(out)
	for _, s := range l.Conversations {
		p.print([]string{"conversation", "name", "unread", "last_seq", "last_read_seq"}, map[string]any{
			"conversation": s.ConversationId, "name": s.Name, "kind": strings.ToLower(s.Kind.String()),
			"unread": s.Unread, "last_seq": s.LastSeq, "last_read_seq": s.LastReadSeq,
		})
	}
	return nil
}

// runHistory is `imsync history`.
func runHistory(ctx context.Context, args []string, out io.Writer) error {
	fs, cf := newClientFlags("history")
	conv := fs.String("conv", "", "conversation `ID`")
	before := fs.Uint64("before", 0, "history before this `SEQ`")
	after := fs.Uint64("after", 0, "history after this `SEQ`, oldest first (0: from the first message)")
	unread := fs.Bool("unread", false, "history from the first unread message")
	limit := fs.Int("limit", 50, "messages to print")
	if err := parseFlags(ctx, fs, args); err != nil {
		return err
	}
	if *conv == "" || fs.NArg() != 0 {
		return fmt.Errorf("%w: history --conv ID", errUsage)
	}
	if *limit <= 0 {
		return fmt.Errorf("%w: history --limit must be positive", errUsage)
	}
	afterSet := flagGiven(fs, "after")
	c, ctx, done, err := cf.oneRequest(ctx)
	if err != nil {
		return err
	}
	defer done()
	p := cf.printer(out)
	// Pages stop at the server's page size in bytes: ask page after page
	// until --limit messages or the end.
	q := client.HistoryQuery{Before: *before, After: *after, FromStart: afterSet, Limit: *limit, FirstUnread: *unread}
	printed := 0
	for {
		h, err := c.History(ctx, *conv, q)
		if err != nil {
			return err
		}
		for _, m := range h.Messages {
			rec := map[string]any{
				"conversation": *conv, "seq": m.Seq, "sender": m.Message.GetSender(), "client_msg_id": m.Message.GetClientMsgId(),
				"text": m.Message.GetBody(), "recalled": m.Recalled, "edited": m.Edited,
			}
			addReply(rec, m.Message)
			p.print([]string{"seq", "sender", "text", "recalled", "edited", "reply_to", "mentions", "client_msg_id"}, rec)
		}
		printed += len(h.Messages)
		if !h.More || len(h.Messages) == 0 {
			return nil
		}
		oldestFirst := afterSet || *unread
		edge := h.Messages[len(h.Messages)-1].Seq
		if printed >= *limit {
			// say where the rest starts
			rec := map[string]any{"conversation": *conv, "more": true}
			if oldestFirst {
				rec["after"] = edge
			} else {
				rec["before"] = edge
			}
			p.print([]string{"more", "before", "after"}, rec)
			return nil
		}
		q = client.HistoryQuery{Limit: *limit - printed}
		if oldestFirst {
			q.After, q.FromStart = edge, true
		} else {
			q.Before = edge
		}
	}
}

// addReply adds a message's reply_to and mentions to rec, when it has them,
// and (printed with --json) a kind other than text and the metadata.
func addReply(rec map[string]any, m *eventspb.MessageSent) {
	if m.GetReplyTo() != 0 {
		rec["reply_to"] = m.GetReplyTo()
	}
	if len(m.GetMentions()) > 0 {
		rec["mentions"] = m.GetMentions()
	}
	if k := m.GetKind(); k != "" && k != "text" {
		rec["kind"] = k
	}
	if len(m.GetMetadata()) > 0 {
		rec["metadata"] = m.GetMetadata()
	}
}

// runSync is `imsync sync`.
func runSync(ctx context.Context, args []string, out io.Writer) error {
	fs, cf := newClientFlags("sync")
	state := fs.String("state", "", "`FILE` keeping this device's last user seq")
	if err := parseFlags(ctx, fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("%w: sync takes no arguments", errUsage)
	}
	last := uint64(0)
	if *state != "" {
		b, err := os.ReadFile(*state)
		if err == nil {
			if last, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err != nil {
				return fmt.Errorf("state file %s: %v", *state, err)
			}
		} else if !os.IsNotExist(err) {
			return err
		}
	}
	p := cf.printer(out)
	c, err := cf.dial(ctx, last, false)
	if err != nil {
		return err
	}
	if newest := c.Welcome().GetUserSeq(); last > newest {
		// The saved position is beyond anything the server has (a state file
		// from another server, or a store restored from an older backup):
		// nothing would ever arrive after it. Say so, and sync again from
		// the start of the timeline.
		p.print([]string{"notice", "saved_user_seq", "newest_user_seq"}, map[string]any{
			"notice":         "saved position beyond the server's newest; syncing again from the start",
			"saved_user_seq": last, "newest_user_seq": newest,
		})
		c.Close()
		last = 0
		if c, err = cf.dial(ctx, last, false); err != nil {
			return err
		}
	}
	defer c.Close()
	// Print what the timeline holds now, then remember where we are.
	newest, printed := c.Welcome().UserSeq, last
	for printed < newest {
		select {
		case e := <-c.Entries():
			p.print(entryFields, entryRecord(e))
			printed = e.UserSeq
		case <-ctx.Done():
			return nil
		case <-time.After(10 * time.Second):
			return fmt.Errorf("sync stalled at %d of %d", printed, newest)
		}
	}
	if printed > last {
		if err := c.Ack(ctx, printed); err != nil {
			return err
		}
	}
	if *state != "" {
		return os.WriteFile(*state, []byte(strconv.FormatUint(printed, 10)+"\n"), 0o644)
	}
	return nil
}

// runTail is `imsync tail`.
func runTail(ctx context.Context, args []string, out io.Writer) error {
	fs, cf := newClientFlags("tail")
	if err := parseFlags(ctx, fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("%w: tail takes no arguments", errUsage)
	}
	// Reconnections are said on standard error, so that a quiet tail is not
	// taken for a stuck one; standard output stays the timeline alone.
	stderr := stderrOf(ctx)
	cf.onConnState = func(st client.ConnState) { fmt.Fprintln(stderr, tailConnNotice(st)) }
	c, err := cf.dial(ctx, 0, true)
	if err != nil {
		return err
	}
	defer c.Close()
	w := c.Welcome()
	fmt.Fprintf(stderrOf(ctx), "imsync tail: following the sync timeline of %s/%s after user seq %d (interrupt to stop)\n", w.GetUser(), w.GetDevice(), w.GetUserSeq())
	p := cf.printer(out)
	for {
		select {
		case e, ok := <-c.Entries():
			if !ok {
				return tailEnded(c.Err())
			}
			p.print(entryFields, entryRecord(e))
			c.Ack(ctx, e.UserSeq)
		case ch, ok := <-c.Changes():
			if !ok {
				return tailEnded(c.Err())
			}
			// A read-fanout group changed (it writes no timeline entry per
			// message): its history has the news.
			if ch.Conversation == "" {
				p.print([]string{"type", "refresh"}, map[string]any{"type": "ConversationsChanged", "refresh": "convs"})
			} else {
				p.print([]string{"type", "conversation", "seq"}, map[string]any{"type": "ConversationChanged", "conversation": ch.Conversation, "seq": ch.Seq})
			}
		case <-ctx.Done():
			return nil // interrupted: the normal end of tail
		}
	}
}
