package export

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"
)

// Writer writes rows in one format. Close flushes what is buffered and
// finishes the file (it does not close the underlying io.Writer).
type Writer interface {
	Write(Row) error
	Close() error
}

// Format names an export format.
type Format string

const (
	JSONL   Format = "jsonl"
	Parquet Format = "parquet"
)

// NewWriter returns a writer of format f onto w.
func NewWriter(f Format, w io.Writer) (Writer, error) {
	switch f {
	case JSONL:
		return NewJSONL(w), nil
	case Parquet:
		return NewParquet(w), nil
	}
	return nil, fmt.Errorf("export: unknown format %q (want jsonl or parquet)", f)
}

// NewJSONL writes one JSON object per line; absent fields are left out,
// fields is a nested object and time and at are RFC 3339 strings.
func NewJSONL(w io.Writer) Writer {
	bw := bufio.NewWriterSize(w, 64<<10)
	return &jsonlWriter{bw: bw, enc: json.NewEncoder(bw)}
}

type jsonlWriter struct {
	bw  *bufio.Writer
	enc *json.Encoder
}

func (j *jsonlWriter) Write(r Row) error { return j.enc.Encode(r) }
func (j *jsonlWriter) Close() error      { return j.bw.Flush() }

// RowGroupRows is the number of rows per Parquet row group.
const RowGroupRows = 64 << 10

// NewParquet writes a Parquet file whose schema is Row's (zstd-compressed
// columns, row groups of RowGroupRows rows).
func NewParquet(w io.Writer) Writer {
	return &parquetWriter{w: parquet.NewGenericWriter[Row](w,
		parquet.Compression(&zstd.Codec{}),
		parquet.MaxRowsPerRowGroup(RowGroupRows),
		parquet.CreatedBy("imsync export", "", ""),
	)}
}

type parquetWriter struct {
	w   *parquet.GenericWriter[Row]
	buf []Row
}

func (p *parquetWriter) Write(r Row) error {
	p.buf = append(p.buf, r)
	if len(p.buf) < 1024 {
		return nil
	}
	return p.flush()
}

func (p *parquetWriter) flush() error {
	if _, err := p.w.Write(p.buf); err != nil {
		return fmt.Errorf("export: parquet: %w", err)
	}
	clear(p.buf)
	p.buf = p.buf[:0]
	return nil
}

func (p *parquetWriter) Close() error {
	if err := p.flush(); err != nil {
		return err
	}
	if err := p.w.Close(); err != nil {
		return fmt.Errorf("export: parquet: %w", err)
	}
	return nil
}
