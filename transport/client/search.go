package client

import (
	"context"
	"time"

	"github.com/imsync/imsync/transport/wire"
)

// SearchQuery selects messages of the caller's conversations that hold
// every word of Text (case ignored), best matches first. The filters that
// are set narrow it down; From and To bound the time sent (From <= t < To,
// zero: open). Limit is the page size (0: the server's 20, at most 100);
// Offset skips hits (a result's NextOffset: the next page).
type SearchQuery struct {
	Text         string
	Conversation string
	Sender       string
	Kind         string
	From, To     time.Time
	Limit        int
	Offset       int
}

// Search runs one page of a search on the server. Hits come only from
// conversations the caller is a member of; a Conversation the caller is
// not a member of is CodeNotFound, a bad query CodeInvalid.
func (c *Client) Search(ctx context.Context, q SearchQuery) (*wire.SearchResult, error) {
	if q.Limit < 0 || q.Offset < 0 || q.Limit > 1<<31 || q.Offset > 1<<31 {
		return nil, &wire.Error{Code: CodeInvalid, Message: "search limit and offset must be 0 or positive"}
	}
	m := &wire.Search{
		Query: q.Text, Conversation: q.Conversation, Sender: q.Sender, Kind: q.Kind,
		Limit: uint32(q.Limit), Offset: uint32(q.Offset),
	}
	if !q.From.IsZero() {
		m.FromUnixMs = q.From.UnixMilli()
	}
	if !q.To.IsZero() {
		m.ToUnixMs = q.To.UnixMilli()
	}
	res, err := c.call(ctx, &wire.Request{Op: &wire.Request_Search{Search: m}}, true)
	if err != nil {
		return nil, err
	}
	return res.GetSearch(), nil
}
