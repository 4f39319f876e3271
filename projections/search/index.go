package search

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/blevesearch/bleve/v2"
	"github.com/blevesearch/bleve/v2/analysis/analyzer/custom"
	"github.com/blevesearch/bleve/v2/analysis/analyzer/keyword"
	"github.com/blevesearch/bleve/v2/analysis/token/lowercase"
	"github.com/blevesearch/bleve/v2/analysis/tokenizer/unicode"
	"github.com/blevesearch/bleve/v2/mapping"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/events/eventspb"
	"github.com/imsync/imsync/projections"
)

// Name is the projection's name: its registry entry and the directory
// `imsync replay` and `imsync serve` keep the index in
// (DATA/projections/search).
const Name = "search"

// checkpointKey is the bleve internal key holding the checkpoint.
var checkpointKey = []byte("imsync.checkpoint")

// Index is the search projection: a bleve index with one document per
// message of the conversation streams (conversation, seq, sender, kind,
// time, text). A recall deletes the message's document; an edit replaces
// its text.
//
// Its checkpoint is stored in the index itself, in the same bleve batch as
// the documents it covers (see Checkpoints): a restart resumes exactly
// after the last batch written, neither skipping nor applying an event
// twice. Handle only stages changes; they become visible to Search when the
// runner saves the checkpoint (every Runner.SaveEvery events and when the
// stream goes idle).
//
// Handle, Checkpoints and Reset are for the one runner feeding the index;
// Search may be called concurrently with them.
type Index struct {
	mu  sync.RWMutex // guards idx against Reset and Close
	dir string
	idx bleve.Index

	// The runner's unsaved changes (only the runner's goroutine uses
	// them): the batch written with the next checkpoint, and the staged
	// documents by id (nil: deleted), for edits and recalls of messages
	// of the same batch.
	batch  *bleve.Batch
	staged map[string]*doc
}

var (
	_ projections.Projection       = (*Index)(nil)
	_ projections.Filter           = (*Index)(nil)
	_ projections.Resetter         = (*Index)(nil)
	_ projections.Located          = (*Index)(nil)
	_ projections.CheckpointKeeper = (*Index)(nil)
)

// New returns an index that is not open yet (the registry's constructor):
// call Open before using it.
func New() *Index { return &Index{} }

// Open opens the index in dir, creating it when missing.
func Open(dir string) (*Index, error) {
	x := New()
	if err := x.Open(dir); err != nil {
		return nil, err
	}
	return x, nil
}

// openConfig makes a second process opening the same index (a replay
// while `imsync serve` keeps it live) fail quickly instead of waiting.
var openConfig = map[string]any{"bolt_timeout": "1s"}

// Open implements projections.Located: it opens the index in dir,
// creating it when missing.
func (x *Index) Open(dir string) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.idx != nil {
		return fmt.Errorf("search: index already open in %s", x.dir)
	}
	idx, err := openOrCreate(dir)
	if err != nil {
		return err
	}
	x.dir, x.idx = dir, idx
	x.clearStaged()
	return nil
}

func openOrCreate(dir string) (bleve.Index, error) {
	idx, err := bleve.OpenUsing(dir, openConfig)
	if errors.Is(err, bleve.ErrorIndexPathDoesNotExist) {
		if err := os.MkdirAll(parentDir(dir), 0o750); err != nil {
			return nil, fmt.Errorf("search: %w", err)
		}
		idx, err = bleve.NewUsing(dir, indexMapping(), bleve.Config.DefaultIndexType, bleve.Config.DefaultKVStore, openConfig)
	}
	if err != nil {
		if strings.Contains(err.Error(), "timeout") {
			return nil, fmt.Errorf("search: index %s is in use by another process (a running imsync serve?): %w", dir, err)
		}
		return nil, fmt.Errorf("search: open index %s: %w", dir, err)
	}
	return idx, nil
}

func parentDir(dir string) string {
	if i := strings.LastIndexAny(dir, `/\`); i > 0 {
		return dir[:i]
	}
	return "."
}

// Close implements projections.Located. Changes not saved with a
// checkpoint are dropped (they are delivered again after the checkpoint).
func (x *Index) Close() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.idx == nil {
		return nil
	}
	err := x.idx.Close()
	x.idx = nil
	return err
}

// Dir is the directory of the index.
func (x *Index) Dir() string { return x.dir }

// Name implements projections.Projection.
func (*Index) Name() string { return Name }

// Filter implements projections.Filter: the conversation streams.
func (*Index) Filter() events.Filter {
	return events.Filter{StreamPrefixes: []string{events.ConversationPrefix}}
}

// doc is one message as indexed.
type doc struct {
	Conversation string
	Seq          uint64
	Sender       string
	Kind         string
	AtUnixMs     int64
	Text         string
	Edited       bool
}

func docID(conv string, seq uint64) string { return conv + "/" + strconv.FormatUint(seq, 10) }

// fields is the document as bleve indexes it (see indexMapping).
func (d *doc) fields() map[string]any {
	return map[string]any{
		"conversation": d.Conversation,
		"seq":          float64(d.Seq),
		"sender":       d.Sender,
		"kind":         d.Kind,
		"at":           float64(d.AtUnixMs),
		"text":         d.Text,
		"edited":       d.Edited,
	}
}

func docFromFields(f map[string]any) *doc {
	d := &doc{}
	d.Conversation, _ = f["conversation"].(string)
	d.Sender, _ = f["sender"].(string)
	d.Kind, _ = f["kind"].(string)
	d.Text, _ = f["text"].(string)
	d.Edited, _ = f["edited"].(bool)
	if v, ok := f["seq"].(float64); ok {
		d.Seq = uint64(v)
	}
	if v, ok := f["at"].(float64); ok {
		d.AtUnixMs = int64(v)
	}
	return d
}

// bodyText is the searchable text of a body: the body when it is UTF-8
// text, nothing otherwise (a kind whose body is binary is found by its
// other fields).
func bodyText(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return ""
}

func indexMapping() mapping.IndexMapping {
	m := bleve.NewIndexMapping()
	// Words as written in any script, lower-cased: no stemming or stop
	// words, so a search for any word of a message finds it.
	if err := m.AddCustomAnalyzer("message", map[string]any{
		"type":          custom.Name,
		"tokenizer":     unicode.Name,
		"token_filters": []any{lowercase.Name},
	}); err != nil {
		panic(err) // a fixed, valid definition
	}
	// Every field is stored (hits carry them). Only the time keeps doc
	// values (hits are sorted by it); no field keeps term vectors (no
	// phrase queries or highlighting): both cost indexing time.
	keywordField := func() *mapping.FieldMapping {
		f := bleve.NewKeywordFieldMapping()
		f.Analyzer = keyword.Name
		f.IncludeInAll, f.IncludeTermVectors, f.DocValues = false, false, false
		return f
	}
	numberField := func(docValues bool) *mapping.FieldMapping {
		f := bleve.NewNumericFieldMapping()
		f.IncludeInAll, f.IncludeTermVectors, f.DocValues = false, false, docValues
		return f
	}
	text := bleve.NewTextFieldMapping()
	text.Analyzer = "message"
	text.IncludeInAll, text.IncludeTermVectors, text.DocValues = false, false, false
	edited := bleve.NewBooleanFieldMapping()
	edited.IncludeInAll, edited.IncludeTermVectors, edited.DocValues = false, false, false

	dm := bleve.NewDocumentStaticMapping()
	dm.AddFieldMappingsAt("conversation", keywordField())
	dm.AddFieldMappingsAt("sender", keywordField())
	dm.AddFieldMappingsAt("kind", keywordField())
	dm.AddFieldMappingsAt("seq", numberField(false))
	dm.AddFieldMappingsAt("at", numberField(true))
	dm.AddFieldMappingsAt("text", text)
	dm.AddFieldMappingsAt("edited", edited)
	m.DefaultMapping = dm
	m.DefaultAnalyzer = "message"
	m.IndexDynamic, m.StoreDynamic, m.DocValuesDynamic = false, false, false
	return m
}

func (x *Index) clearStaged() {
	if x.idx != nil {
		x.batch = x.idx.NewBatch()
	}
	x.staged = map[string]*doc{}
}

// Handle implements projections.Projection: it stages the message's
// document, its new text, or its deletion, for the next checkpoint.
func (x *Index) Handle(_ context.Context, e projections.Event) error {
	conv, ok := strings.CutPrefix(e.Stream, events.ConversationPrefix)
	if !ok {
		return nil
	}
	if x.batch == nil {
		return errors.New("search: index not open")
	}
	switch m := e.Message.(type) {
	case *eventspb.MessageSent:
		at := m.AtUnixMs
		if at == 0 {
			at = e.Time.UnixMilli()
		}
		return x.stage(&doc{
			Conversation: conv, Seq: uint64(e.Revision) + 1, Sender: m.Sender, Kind: m.Kind,
			AtUnixMs: at, Text: bodyText(m.Body),
		})
	case *eventspb.MessageEdited:
		d, err := x.lookup(conv, m.Seq)
		if err != nil || d == nil {
			return err // a message never indexed or recalled: nothing to edit
		}
		edited := *d
		edited.Text, edited.Edited = bodyText(m.Body), true
		return x.stage(&edited)
	case *eventspb.MessageRecalled:
		id := docID(conv, m.Seq)
		x.batch.Delete(id)
		x.staged[id] = nil
	}
	return nil
}

func (x *Index) stage(d *doc) error {
	id := docID(d.Conversation, d.Seq)
	if err := x.batch.Index(id, d.fields()); err != nil {
		return fmt.Errorf("search: index %s: %w", id, err)
	}
	x.staged[id] = d
	return nil
}

// lookup finds a message's document: staged, or in the index. It returns
// nil when there is none.
func (x *Index) lookup(conv string, seq uint64) (*doc, error) {
	id := docID(conv, seq)
	if d, ok := x.staged[id]; ok {
		return d, nil
	}
	req := bleve.NewSearchRequestOptions(bleve.NewDocIDQuery([]string{id}), 1, 0, false)
	req.Fields = []string{"*"}
	x.mu.RLock()
	defer x.mu.RUnlock()
	res, err := x.idx.Search(req)
	if err != nil {
		return nil, fmt.Errorf("search: look up %s: %w", id, err)
	}
	if len(res.Hits) == 0 {
		return nil, nil
	}
	return docFromFields(res.Hits[0].Fields), nil
}

// Reset implements projections.Resetter: it empties the index.
func (x *Index) Reset(context.Context) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.idx == nil {
		return errors.New("search: index not open")
	}
	if err := x.idx.Close(); err != nil {
		return fmt.Errorf("search: reset: %w", err)
	}
	x.idx = nil
	if err := os.RemoveAll(x.dir); err != nil {
		return fmt.Errorf("search: reset: %w", err)
	}
	idx, err := openOrCreate(x.dir)
	if err != nil {
		return err
	}
	x.idx = idx
	x.clearStaged()
	return nil
}

// Checkpoints implements projections.CheckpointKeeper: a checkpoint store
// that keeps the index's checkpoint inside it. Save writes the staged
// documents and the checkpoint in one bleve batch; Load drops what was
// staged after the checkpoint (it is delivered again).
func (x *Index) Checkpoints() projections.CheckpointStore { return indexCheckpoints{x} }

type indexCheckpoints struct{ x *Index }

type storedCheckpoint struct {
	Commit  uint64 `json:"commit"`
	Prepare uint64 `json:"prepare"`
}

// Load implements projections.CheckpointStore.
func (c indexCheckpoints) Load(_ context.Context, name string) (projections.Checkpoint, bool, error) {
	if err := c.check(name); err != nil {
		return projections.Checkpoint{}, false, err
	}
	c.x.mu.RLock()
	defer c.x.mu.RUnlock()
	if err := c.open(); err != nil {
		return projections.Checkpoint{}, false, err
	}
	c.x.clearStaged()
	b, err := c.x.idx.GetInternal(checkpointKey)
	if err != nil {
		return projections.Checkpoint{}, false, fmt.Errorf("search: load checkpoint: %w", err)
	}
	if b == nil {
		return projections.Checkpoint{}, false, nil
	}
	var sc storedCheckpoint
	if err := json.Unmarshal(b, &sc); err != nil {
		return projections.Checkpoint{}, false, fmt.Errorf("search: checkpoint in %s is damaged: %w", c.x.dir, err)
	}
	return projections.Checkpoint{Position: events.Position{Commit: sc.Commit, Prepare: sc.Prepare}}, true, nil
}

// Save implements projections.CheckpointStore: the staged changes and
// the checkpoint go into the index in one batch, which bleve has written
// to disk (fsynced) when Save returns.
func (c indexCheckpoints) Save(_ context.Context, name string, cp projections.Checkpoint) error {
	if err := c.check(name); err != nil {
		return err
	}
	b, err := json.Marshal(storedCheckpoint{Commit: cp.Position.Commit, Prepare: cp.Position.Prepare})
	if err != nil {
		return err
	}
	c.x.mu.RLock()
	defer c.x.mu.RUnlock()
	if err := c.open(); err != nil {
		return err
	}
	c.x.batch.SetInternal(checkpointKey, b)
	if err := c.x.idx.Batch(c.x.batch); err != nil {
		return fmt.Errorf("search: save batch at %s: %w", cp.Position, err)
	}
	c.x.clearStaged()
	return nil
}

// Delete implements projections.CheckpointStore.
func (c indexCheckpoints) Delete(_ context.Context, name string) error {
	if err := c.check(name); err != nil {
		return err
	}
	c.x.mu.RLock()
	defer c.x.mu.RUnlock()
	if err := c.open(); err != nil {
		return err
	}
	c.x.clearStaged()
	if err := c.x.idx.DeleteInternal(checkpointKey); err != nil {
		return fmt.Errorf("search: delete checkpoint: %w", err)
	}
	return nil
}

func (c indexCheckpoints) check(name string) error {
	if name != Name {
		return fmt.Errorf("%w: the search index keeps only its own checkpoint, not %q", events.ErrInvalidArgument, name)
	}
	return nil
}

// open checks, with c.x.mu held, that the index is open.
func (c indexCheckpoints) open() error {
	if c.x.idx == nil {
		return errors.New("search: index not open")
	}
	return nil
}

// Count returns the number of messages in the index (saved ones).
func (x *Index) Count() (uint64, error) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if x.idx == nil {
		return 0, errors.New("search: index not open")
	}
	return x.idx.DocCount()
}

// Timestamp of a doc, for results.
func (d *doc) time() time.Time { return time.UnixMilli(d.AtUnixMs).UTC() }
