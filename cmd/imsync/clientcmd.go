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
}

func (f *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.server, "server", os.Getenv("IMSYNC_SERVER"), "server HOST:PORT (or IMSYNC_SERVER)")
	fs.StringVar(&f.token, "token", os.Getenv("IMSYNC_TOKEN"), "device token (or IMSYNC_TOKEN)")
	fs.StringVar(&f.ca, "ca", os.Getenv("IMSYNC_CA"), "certificate to trust (the server's DIR/server.crt)")
	fs.BoolVar(&f.insecure, "insecure", false, "trust any server certificate")
	fs.BoolVar(&f.json, "json", false, "print JSON, one object per line")
}

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
			return nil, err
		}
		if t, err = client.PinnedTLS(pem); err != nil {
			return nil, err
		}
	default:
		t = &tls.Config{}
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return client.Dial(dctx, client.Config{Addr: f.server, Token: f.token, TLS: t, LastUserSeq: last, FromNewest: fromNewest, Client: "imsync-cli/1"})
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

func runClient(ctx context.Context, cmd string, args []string, out io.Writer) error {
	sub := ""
	if cmd == "group" {
		if len(args) == 0 {
			return fmt.Errorf("%w: group needs create, add or remove", errUsage)
		}
		sub, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var cf clientFlags
	cf.register(fs)
	to := fs.String("to", "", "user to message directly")
	conv := fs.String("conv", "", "conversation id")
	id := fs.String("id", "", "client message id (default: a new one, printed)")
	name := fs.String("name", "", "group name")
	members := fs.String("members", "", "comma-separated members")
	before := fs.Uint64("before", 0, "history before this seq")
	after := fs.Uint64("after", 0, "history after this seq, oldest first (0: from the first message)")
	unread := fs.Bool("unread", false, "history from the first unread message")
	limit := fs.Int("limit", 50, "page size")
	seq := fs.Uint64("seq", 0, "seq of a message")
	state := fs.String("state", "", "file keeping this device's last user seq")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %s: %v", errUsage, cmd, err)
	}
	p := printer{out: out, json: cf.json}

	switch cmd {
	case "send":
		if fs.NArg() != 1 || (*to == "") == (*conv == "") {
			return fmt.Errorf("%w: send (--to USER | --conv ID) TEXT", errUsage)
		}
	case "group":
		switch sub {
		case "create":
			if *name == "" {
				return fmt.Errorf("%w: group create --name NAME --members a,b,c", errUsage)
			}
		case "add", "remove":
			if *conv == "" || fs.NArg() != 1 {
				return fmt.Errorf("%w: group %s --conv ID USER", errUsage, sub)
			}
		default:
			return fmt.Errorf("%w: unknown group command %q", errUsage, sub)
		}
	case "history":
		if *conv == "" {
			return fmt.Errorf("%w: history --conv ID", errUsage)
		}
	case "read", "recall":
		if *conv == "" || *seq == 0 {
			return fmt.Errorf("%w: %s --conv ID --seq N", errUsage, cmd)
		}
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
	c, err := cf.dial(ctx, last, cmd == "tail")
	if err != nil {
		return err
	}
	if newest := c.Welcome().GetUserSeq(); cmd == "sync" && last > newest {
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
	if cmd != "tail" && cmd != "sync" {
		// The client waits for a lost server to come back; a one-request
		// command gives up after this long.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
	}

	switch cmd {
	case "send":
		cid := *id
		if cid == "" {
			cid = uuid.NewString()
		}
		r, err := c.Send(ctx, client.Message{To: *to, Conversation: *conv, ClientMsgID: cid, Text: fs.Arg(0)})
		if err != nil {
			return err
		}
		p.print([]string{"conversation", "seq", "client_msg_id", "duplicate"},
			map[string]any{"conversation": r.Conversation, "seq": r.Seq, "client_msg_id": cid, "duplicate": r.Duplicate})
	case "group":
		switch sub {
		case "create":
			var ms []string
			for _, m := range strings.Split(*members, ",") {
				if m = strings.TrimSpace(m); m != "" {
					ms = append(ms, m)
				}
			}
			g, err := c.CreateGroup(ctx, "", *name, ms)
			if err != nil {
				return err
			}
			p.print([]string{"conversation"}, map[string]any{"conversation": g})
		case "add", "remove":
			var s uint64
			if sub == "add" {
				s, err = c.AddMember(ctx, *conv, fs.Arg(0))
			} else {
				s, err = c.RemoveMember(ctx, *conv, fs.Arg(0))
			}
			if err != nil {
				return err
			}
			p.print([]string{"conversation", "seq"}, map[string]any{"conversation": *conv, "seq": s})
		}
	case "convs":
		l, err := c.Conversations(ctx)
		if err != nil {
			return err
		}
		for _, s := range l.Conversations {
			p.print([]string{"conversation", "name", "unread", "last_seq", "last_read_seq"}, map[string]any{
				"conversation": s.ConversationId, "name": s.Name, "kind": strings.ToLower(s.Kind.String()),
				"unread": s.Unread, "last_seq": s.LastSeq, "last_read_seq": s.LastReadSeq,
			})
		}
	case "history":
		afterSet := false
		fs.Visit(func(f *flag.Flag) { afterSet = afterSet || f.Name == "after" })
		if *limit <= 0 {
			return fmt.Errorf("%w: history --limit must be positive", errUsage)
		}
		// Pages stop at the server's page size in bytes: ask page after
		// page until --limit messages or the end.
		q := client.HistoryQuery{Before: *before, After: *after, FromStart: afterSet, Limit: *limit, FirstUnread: *unread}
		printed := 0
		for {
			h, err := c.History(ctx, *conv, q)
			if err != nil {
				return err
			}
			for _, m := range h.Messages {
				p.print([]string{"seq", "sender", "text", "recalled", "client_msg_id"}, map[string]any{
					"conversation": *conv, "seq": m.Seq, "sender": m.Message.GetSender(), "client_msg_id": m.Message.GetClientMsgId(),
					"text": m.Message.GetBody(), "recalled": m.Recalled,
				})
			}
			printed += len(h.Messages)
			if !h.More || len(h.Messages) == 0 {
				break
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
				break
			}
			q = client.HistoryQuery{Limit: *limit - printed}
			if oldestFirst {
				q.After, q.FromStart = edge, true
			} else {
				q.Before = edge
			}
		}
	case "sync":
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
	case "tail":
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
				// A read-fanout group changed (it writes no timeline entry
				// per message): its history has the news.
				if ch.Conversation == "" {
					p.print([]string{"type", "refresh"}, map[string]any{"type": "ConversationsChanged", "refresh": "convs"})
				} else {
					p.print([]string{"type", "conversation", "seq"}, map[string]any{"type": "ConversationChanged", "conversation": ch.Conversation, "seq": ch.Seq})
				}
			case <-ctx.Done():
				return nil // interrupted: the normal end of tail
			}
		}
	case "read":
		marker, err := c.MarkRead(ctx, *conv, *seq)
		if err != nil {
			return err
		}
		// The marker that results: an older seq leaves a further one in place.
		p.print([]string{"conversation", "read_seq"}, map[string]any{"conversation": *conv, "read_seq": marker})
	case "recall":
		s, err := c.Recall(ctx, *conv, *seq)
		if err != nil {
			return err
		}
		p.print([]string{"conversation", "seq", "recalled_seq"}, map[string]any{"conversation": *conv, "seq": s, "recalled_seq": *seq})
	}
	return nil
}

// tailEnded is the error tail ends with when the client stopped for good
// (its channels closed): a refused or expired token says so.
func tailEnded(err error) error {
	var we *wire.Error
	switch {
	case errors.As(err, &we) && we.Code == wire.CodeUnauthorized:
		return fmt.Errorf("tail: unauthorized (%d): %s; get a new token", we.Code, we.Message)
	case err != nil:
		return fmt.Errorf("tail: %w", err)
	}
	return errors.New("tail: the connection ended")
}

var entryFields = []string{"user_seq", "type", "conversation", "seq", "sender", "text", "user", "added", "recalled_seq", "read_seq"}

// entryRecord flattens a sync entry for printing.
func entryRecord(e client.Entry) map[string]any {
	r := map[string]any{"user_seq": e.UserSeq, "type": e.Type}
	switch m := e.Message.(type) {
	case *eventspb.MessagePointer:
		r["conversation"], r["seq"], r["sender"] = m.ConversationId, m.Seq, m.Sender
		if m.Message != nil {
			r["text"], r["client_msg_id"] = m.Message.Body, m.Message.ClientMsgId
		}
	case *eventspb.MembershipChanged:
		r["conversation"], r["seq"], r["user"], r["added"] = m.ConversationId, m.Seq, m.User, m.Added
	case *eventspb.RecallNotice:
		r["conversation"], r["seq"], r["recalled_seq"] = m.ConversationId, m.Seq, m.RecalledSeq
	case *eventspb.EditNotice:
		r["conversation"], r["seq"], r["text"] = m.ConversationId, m.Seq, m.Body
	case *eventspb.ReadMarkerMoved:
		r["conversation"], r["read_seq"] = m.ConversationId, m.ReadSeq
	}
	return r
}
