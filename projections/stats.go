package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
)

// Stats counts what analysts ask first: messages per conversation per UTC
// day, active users (distinct senders) per day, fanout sizes (inbox
// entries written per conversation message) and delivery lag (the time
// the store recorded an inbox entry minus the time it recorded the
// conversation's message, matched by conversation and seq). It is
// Stateful: its whole state is saved with the checkpoint.
//
// A message's day is its at_unix_ms (the server's clock when it was
// sent), or the time the store recorded it when at_unix_ms is 0. The
// state keeps one entry per message and one lag per inbox entry: it grows
// with the store.
type Stats struct {
	st statsState
}

type statsState struct {
	// Messages[conversation][day] counts MessageSent events.
	Messages map[string]map[string]int `json:"messages"`
	// Senders[day][user] is set for every user who sent that day.
	Senders map[string]map[string]bool `json:"senders"`
	// Sent["conv/seq"] is when the store recorded the message (unix ms).
	Sent map[string]int64 `json:"sent"`
	// Fanout["conv/seq"] counts MessagePointer entries for the message.
	Fanout map[string]int `json:"fanout"`
	// LagsMS holds one delivery lag per inbox entry whose message was seen.
	LagsMS []int64 `json:"lags_ms"`
}

var (
	_ Projection = (*Stats)(nil)
	_ Filter     = (*Stats)(nil)
	_ Stateful   = (*Stats)(nil)
)

// NewStats returns an empty Stats projection.
func NewStats() *Stats {
	s := &Stats{}
	_ = s.Restore(nil)
	return s
}

// Name implements Projection.
func (*Stats) Name() string { return "stats" }

// Filter implements Filter: conversation and inbox streams.
func (*Stats) Filter() events.Filter {
	return events.Filter{StreamPrefixes: []string{events.ConversationPrefix, events.InboxPrefix}}
}

func msgKey(conv string, seq uint64) string { return fmt.Sprintf("%s/%d", conv, seq) }

// Handle implements Projection.
func (s *Stats) Handle(_ context.Context, e Event) error {
	switch m := e.Message.(type) {
	case *eventspb.MessageSent:
		conv, ok := strings.CutPrefix(e.Stream, events.ConversationPrefix)
		if !ok {
			return nil
		}
		t := e.Time
		if m.AtUnixMs != 0 {
			t = time.UnixMilli(m.AtUnixMs).UTC()
		}
		day := t.Format(time.DateOnly)
		if s.st.Messages[conv] == nil {
			s.st.Messages[conv] = map[string]int{}
		}
		s.st.Messages[conv][day]++
		if s.st.Senders[day] == nil {
			s.st.Senders[day] = map[string]bool{}
		}
		s.st.Senders[day][m.Sender] = true
		k := msgKey(conv, uint64(e.Revision)+1)
		s.st.Sent[k] = e.Time.UnixMilli()
		if _, ok := s.st.Fanout[k]; !ok {
			s.st.Fanout[k] = 0
		}
	case *eventspb.MessagePointer:
		if !strings.HasPrefix(e.Stream, events.InboxPrefix) {
			return nil
		}
		k := msgKey(m.ConversationId, m.Seq)
		s.st.Fanout[k]++
		if at, ok := s.st.Sent[k]; ok {
			s.st.LagsMS = append(s.st.LagsMS, e.Time.UnixMilli()-at)
		}
	}
	return nil
}

// Snapshot implements Stateful.
func (s *Stats) Snapshot() ([]byte, error) { return json.Marshal(s.st) }

// Restore implements Stateful.
func (s *Stats) Restore(b []byte) error {
	st := statsState{}
	if b != nil {
		if err := json.Unmarshal(b, &st); err != nil {
			return fmt.Errorf("stats: state: %w", err)
		}
	}
	if st.Messages == nil {
		st.Messages = map[string]map[string]int{}
	}
	if st.Senders == nil {
		st.Senders = map[string]map[string]bool{}
	}
	if st.Sent == nil {
		st.Sent = map[string]int64{}
	}
	if st.Fanout == nil {
		st.Fanout = map[string]int{}
	}
	s.st = st
	return nil
}

// StatsReport is what Stats has counted, sorted for printing.
type StatsReport struct {
	Days          []DayStats        `json:"days"`
	Conversations []ConversationDay `json:"conversations"`
	Fanout        Distribution      `json:"fanout"`
	LagMS         Distribution      `json:"delivery_lag_ms"`
}

// DayStats is one UTC day: messages sent and distinct senders.
type DayStats struct {
	Day         string `json:"day"`
	Messages    int    `json:"messages"`
	ActiveUsers int    `json:"active_users"`
}

// ConversationDay is one conversation's message count on one UTC day.
type ConversationDay struct {
	Conversation string `json:"conversation"`
	Day          string `json:"day"`
	Messages     int    `json:"messages"`
}

// Distribution summarises samples by nearest-rank percentiles.
type Distribution struct {
	Count int   `json:"count"`
	Min   int64 `json:"min"`
	P50   int64 `json:"p50"`
	P90   int64 `json:"p90"`
	P99   int64 `json:"p99"`
	Max   int64 `json:"max"`
}

// Distribute sorts a copy of samples and takes its nearest-rank
// percentiles (the smallest sample with at least p% of them at or below).
func Distribute(samples []int64) Distribution {
	if len(samples) == 0 {
		return Distribution{}
	}
	v := slices.Clone(samples)
	slices.Sort(v)
	rank := func(p float64) int64 {
		i := int(math.Ceil(p*float64(len(v)))) - 1
		return v[max(i, 0)]
	}
	return Distribution{Count: len(v), Min: v[0], P50: rank(0.50), P90: rank(0.90), P99: rank(0.99), Max: v[len(v)-1]}
}

// Report returns the statistics counted so far.
func (s *Stats) Report() StatsReport {
	var r StatsReport
	perDay := map[string]int{}
	for conv, days := range s.st.Messages {
		for day, n := range days {
			r.Conversations = append(r.Conversations, ConversationDay{Conversation: conv, Day: day, Messages: n})
			perDay[day] += n
		}
	}
	slices.SortFunc(r.Conversations, func(a, b ConversationDay) int {
		if c := strings.Compare(a.Day, b.Day); c != 0 {
			return c
		}
		return strings.Compare(a.Conversation, b.Conversation)
	})
	for day, n := range perDay {
		r.Days = append(r.Days, DayStats{Day: day, Messages: n, ActiveUsers: len(s.st.Senders[day])})
	}
	slices.SortFunc(r.Days, func(a, b DayStats) int { return strings.Compare(a.Day, b.Day) })
	fan := make([]int64, 0, len(s.st.Fanout))
	for _, n := range s.st.Fanout {
		fan = append(fan, int64(n))
	}
	r.Fanout = Distribute(fan)
	r.LagMS = Distribute(s.st.LagsMS)
	return r
}
