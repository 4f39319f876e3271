//go:build cgo

package export_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/projections"
	"github.com/imsync/imsync/projections/export"
)

// TestParquetReadByDuckDB: DuckDB, an independent Parquet reader, reads
// the export; it finds one row per
// stored event, and every column holds what the store's event says.
func TestParquetReadByDuckDB(t *testing.T) {
	s := fill(t)
	data, n := exportTo(t, s, export.Parquet, export.Range{})
	path := filepath.Join(t.TempDir(), "events.parquet")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	stored := readAll(t, s, events.Filter{})
	if n != len(stored) {
		t.Fatalf("exported %d rows of %d events", n, len(stored))
	}

	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, "CREATE VIEW events AS SELECT * FROM read_parquet('"+path+"')"); err != nil {
		t.Fatal(err)
	}
	var count, messages int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM events").Scan(&count); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM events WHERE type = 'MessageSent' AND stream LIKE 'conv-%'").Scan(&messages); err != nil {
		t.Fatal(err)
	}
	wantMessages := 0
	for _, e := range stored {
		if e.Type == "MessageSent" && strings.HasPrefix(e.Stream, "conv-") {
			wantMessages++
		}
	}
	if count != len(stored) || messages != wantMessages {
		t.Fatalf("DuckDB counts %d rows and %d messages; the store holds %d events and %d messages", count, messages, len(stored), wantMessages)
	}

	rows, err := db.QueryContext(ctx, "SELECT * FROM events ORDER BY position")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for ; rows.Next(); i++ {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for k := range vals {
			ptrs[k] = &vals[k]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		got := map[string]any{}
		for k, c := range cols {
			if v := duckValue(t, c, vals[k]); v != nil {
				got[c] = v
			}
		}
		want := storedRow(t, stored[i])
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("row %d:\n duckdb %v\n store  %v", i, got, want)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if i != len(stored) {
		t.Fatalf("DuckDB returned %d rows, the store holds %d events", i, len(stored))
	}
}

// duckValue puts what DuckDB returns in the form of a decoded JSONL value:
// numbers as float64, timestamps as RFC 3339 strings, fields as the
// decoded JSON object; NULL and empty lists as nil (absent).
func duckValue(t *testing.T, col string, v any) any {
	t.Helper()
	switch x := v.(type) {
	case nil:
		return nil
	case uint64:
		return float64(x)
	case int64:
		return float64(x)
	case int32:
		return float64(x)
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case []any:
		if len(x) == 0 {
			return nil
		}
		return x
	case string:
		if col == "fields" {
			var m any
			if err := json.Unmarshal([]byte(x), &m); err != nil {
				t.Fatalf("fields %q: %v", x, err)
			}
			return m
		}
		return x
	case bool:
		return x
	}
	t.Fatalf("column %s: DuckDB returned a %T (%v)", col, v, v)
	return nil
}

// storedRow is the event as its JSONL line shows it, with the store's
// time cut to the microseconds Parquet keeps.
func storedRow(t *testing.T, e events.RecordedEvent) map[string]any {
	t.Helper()
	d, err := projections.Decode(e)
	if err != nil {
		t.Fatal(err)
	}
	row, err := export.Flatten(d)
	if err != nil {
		t.Fatal(err)
	}
	row.Time = row.Time.Truncate(time.Microsecond)
	b, err := json.Marshal(row)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m["stream"] != e.Stream || m["position"] != float64(e.Position.Commit) || m["revision"] != float64(e.Revision) || m["id"] != e.ID.String() {
		t.Fatalf("row %v does not place event %+v", m, e)
	}
	return m
}

// TestAnalystsGuideSQL runs the DuckDB SQL of docs/analysts.md, as
// printed there, on an export written by both formats.
func TestAnalystsGuideSQL(t *testing.T) {
	guide, err := os.ReadFile(filepath.Join("..", "..", "docs", "analysts.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(guide), "### Reading an export")
	if !ok {
		t.Fatal("docs/analysts.md has no section \"Reading an export\"")
	}
	_, rest, _ = strings.Cut(rest, "```sql\n")
	block, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("no SQL block in \"Reading an export\"")
	}
	s := fill(t)
	dir := t.TempDir()
	for f, name := range map[export.Format]string{export.Parquet: "events.parquet", export.JSONL: "events.jsonl"} {
		data, _ := exportTo(t, s, f, export.Range{})
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The guide's file names are relative to the directory DuckDB runs in.
	if _, err := conn.ExecContext(context.Background(), "SET file_search_path = '"+dir+"'"); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, stmt := range strings.Split(block, ";") {
		var lines []string
		for _, l := range strings.Split(stmt, "\n") {
			if !strings.HasPrefix(strings.TrimSpace(l), "--") {
				lines = append(lines, l)
			}
		}
		q := strings.TrimSpace(strings.Join(lines, "\n"))
		if q == "" {
			continue
		}
		rows, err := conn.QueryContext(context.Background(), q)
		if err != nil {
			t.Fatalf("%s\n%v", q, err)
		}
		got := 0
		for rows.Next() {
			got++
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("%s\n%v", q, err)
		}
		rows.Close()
		if got == 0 {
			t.Fatalf("%s\nreturned no row", q)
		}
		n++
	}
	if n < 3 {
		t.Fatalf("ran %d statements of the guide", n)
	}
}
