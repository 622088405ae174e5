package h2

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"golang.org/x/net/http2/hpack"
)

// collect decodes blocks with the own decoder, fragmenting each block at
// the given cut points, and returns "name: value" lines.
func collect(t *testing.T, d *hpackDecoder, out *[]string, block []byte, cuts ...int) error {
	t.Helper()
	prev := 0
	for _, c := range append(cuts, len(block)) {
		if c < prev || c > len(block) {
			continue
		}
		if err := d.write(block[prev:c]); err != nil {
			return err
		}
		prev = c
	}
	return d.close()
}

func newCollector(size uint32) (*hpackDecoder, *[]string) {
	var out []string
	d := newHpackDecoder(size, func(name, value []byte) {
		out = append(out, string(name)+": "+string(value))
	})
	return d, &out
}

// TestHpackStaticTable: every static entry decodes as x/net's decoder
// decodes it.
func TestHpackStaticTable(t *testing.T) {
	d, out := newCollector(4096)
	for i := 1; i <= len(staticTable); i++ {
		block := []byte{0x80 | byte(i)}
		var want []string
		xd := hpack.NewDecoder(4096, nil)
		fields, err := xd.DecodeFull(block)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, fields[0].Name+": "+fields[0].Value)
		*out = (*out)[:0]
		if err := collect(t, d, out, block); err != nil {
			t.Fatalf("index %d: %v", i, err)
		}
		if fmt.Sprint(*out) != fmt.Sprint(want) {
			t.Fatalf("index %d: got %q, want %q", i, *out, want)
		}
	}
}

// TestHpackAgainstXNet: random header lists, encoded by x/net's encoder
// (dynamic table, Huffman, never-indexed fields, table size changes), cut
// into random fragments, decode to what x/net's decoder decodes, over
// many blocks sharing one dynamic table.
func TestHpackAgainstXNet(t *testing.T) {
	names := []string{":method", ":path", ":authority", "content-type", "user-agent", "x-a", "x-long-" + strings.Repeat("n", 70), "cookie", "grpc-timeout", "te"}
	for _, tableSize := range []uint32{0, 256, 4096} {
		t.Run(fmt.Sprint(tableSize), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(tableSize), 7))
			var wire bytes.Buffer
			enc := hpack.NewEncoder(&wire)
			enc.SetMaxDynamicTableSizeLimit(tableSize)
			enc.SetMaxDynamicTableSize(tableSize)
			xd := hpack.NewDecoder(tableSize, nil)
			d, out := newCollector(tableSize)
			for block := 0; block < 400; block++ {
				if block%50 == 49 && tableSize > 0 {
					enc.SetMaxDynamicTableSize(uint32(rng.IntN(int(tableSize) + 1)))
				}
				wire.Reset()
				n := 1 + rng.IntN(12)
				for i := 0; i < n; i++ {
					name := names[rng.IntN(len(names))]
					if rng.IntN(5) == 0 {
						name = fmt.Sprintf("x-%d", rng.IntN(100))
					}
					value := fmt.Sprintf("v%d", rng.IntN(20))
					if rng.IntN(6) == 0 {
						value = strings.Repeat("z", rng.IntN(300))
					}
					if rng.IntN(8) == 0 {
						value = "\xff\x01 binary"
					}
					if err := enc.WriteField(hpack.HeaderField{Name: name, Value: value, Sensitive: rng.IntN(7) == 0}); err != nil {
						t.Fatal(err)
					}
				}
				block := bytes.Clone(wire.Bytes())
				fields, err := xd.DecodeFull(block)
				if err != nil {
					t.Fatal(err)
				}
				var want []string
				for _, f := range fields {
					want = append(want, f.Name+": "+f.Value)
				}
				var cuts []int
				for i := rng.IntN(4); i > 0; i-- {
					cuts = append(cuts, rng.IntN(len(block)+1))
				}
				slicesSort(cuts)
				*out = (*out)[:0]
				if err := collect(t, d, out, block, cuts...); err != nil {
					t.Fatalf("block %d (cuts %v): %v", block, cuts, err)
				}
				if fmt.Sprint(*out) != fmt.Sprint(want) {
					t.Fatalf("block %d (cuts %v):\n got %q\nwant %q", block, cuts, *out, want)
				}
				if d.size > d.maxSize || len(d.log) > 2*int(tableSize) {
					t.Fatalf("block %d: table size %d over %d, log %d bytes", block, d.size, d.maxSize, len(d.log))
				}
			}
		})
	}
}

func slicesSort(a []int) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j] < a[j-1]; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}

// TestHpackErrors: malformed blocks fail, as RFC 7541 requires.
func TestHpackErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		block []byte
		want  error
	}{
		{"index 0", []byte{0x80}, errHpackIndex},
		{"index past the tables", []byte{0x80 | 62}, errHpackIndex},
		{"literal name index past the tables", []byte{0x40 | 63, 0x01, 'a'}, errHpackIndex},
		{"size update over the limit", []byte{0x3f, 0xe2, 0x1f}, errHpackSize}, // 4097
		{"size update after a field", []byte{0x82, 0x20}, errHpackSizeLate},
		{"truncated string", []byte{0x00, 0x03, 'a', 'b'}, errHpackTrunc},
		{"truncated integer", []byte{0xff, 0x80}, errHpackTrunc},
		{"integer overflow", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, errHpackVarint},
		{"Huffman EOS", []byte{0x00, 0x01, 'a', 0x84, 0xff, 0xff, 0xff, 0xff}, hpack.ErrInvalidHuffman},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, out := newCollector(4096)
			err := collect(t, d, out, tc.block)
			if err != tc.want {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("string longer than maxStr", func(t *testing.T) {
		d, out := newCollector(4096)
		d.maxStr = 2
		if err := collect(t, d, out, []byte{0x00, 0x01, 'a', 0x03, 'a', 'b', 'c'}); err != errHpackStrLen {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("size updates first are fine", func(t *testing.T) {
		d, out := newCollector(4096)
		if err := collect(t, d, out, []byte{0x20, 0x3f, 0xe1, 0x1f, 0x82}); err != nil { // 0, then 4096, then :method GET
			t.Fatal(err)
		}
		if len(*out) != 1 || (*out)[0] != ":method: GET" {
			t.Fatalf("got %q", *out)
		}
	})
}

// TestHpackEvictReferencedName: a literal with incremental indexing whose
// name is the entry its insertion evicts keeps the name (RFC 7541
// section 4.4).
func TestHpackEvictReferencedName(t *testing.T) {
	d, out := newCollector(64)
	// "x-a: b" (3+1+32 = 36) fills most of a 64-byte table; then a literal
	// with indexing, name = dynamic index 62, value "cc" evicts it.
	block := []byte{0x40, 0x03, 'x', '-', 'a', 0x01, 'b', 0x40 | 62, 0x02, 'c', 'c', 0x80 | 62}
	if err := collect(t, d, out, block); err != nil {
		t.Fatal(err)
	}
	want := []string{"x-a: b", "x-a: cc", "x-a: cc"}
	if fmt.Sprint(*out) != fmt.Sprint(want) {
		t.Fatalf("got %q, want %q", *out, want)
	}
}

// TestHpackDecodeAllocs: once its table and buffers have grown, decoding
// blocks with literals, Huffman strings and insertions allocates nothing.
func TestHpackDecodeAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	var wire bytes.Buffer
	enc := hpack.NewEncoder(&wire)
	var blocks [][]byte
	for i := 0; i < 64; i++ {
		wire.Reset()
		enc.WriteField(hpack.HeaderField{Name: ":path", Value: fmt.Sprintf("/item/%d", i)})
		enc.WriteField(hpack.HeaderField{Name: "x-request-id", Value: fmt.Sprintf("%08x", i*7919)})
		enc.WriteField(hpack.HeaderField{Name: "authorization", Value: "secret", Sensitive: true})
		blocks = append(blocks, bytes.Clone(wire.Bytes()))
	}
	n := 0
	d := newHpackDecoder(4096, func(name, value []byte) { n += len(name) + len(value) })
	run := func() {
		for _, b := range blocks {
			if err := d.write(b); err != nil {
				t.Fatal(err)
			}
			if err := d.close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	run()
	if a := testing.AllocsPerRun(20, run); a != 0 {
		t.Fatalf("%v allocations per 64 blocks", a)
	}
}
