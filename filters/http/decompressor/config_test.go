package decompressor_test

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	brv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/brotli/decompressor/v3"
	gzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/gzip/decompressor/v3"
	zsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/compression/zstd/decompressor/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/outrider-proxy/outrider/filters/http/decompressor"
	"github.com/outrider-proxy/outrider/proxy/server"
	"github.com/outrider-proxy/outrider/telemetry/stats"
	"github.com/outrider-proxy/outrider/xds/bootstrap"
)

// Config errors name the field; unimplemented fields are refused by name.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ lib, want string }{
		{"gzip.decompressor.v3.Gzip, window_bits: 8", "decompressor_library.typed_config.window_bits: "},
		{"gzip.decompressor.v3.Gzip, chunk_size: 100", "decompressor_library.typed_config.chunk_size: "},
		{"gzip.decompressor.v3.Gzip, max_inflate_ratio: 2000", "decompressor_library.typed_config.max_inflate_ratio: "},
		{"brotli.decompressor.v3.Brotli, chunk_size: 70000", "decompressor_library.typed_config.chunk_size: "},
		{"zstd.decompressor.v3.Zstd, dictionaries: [{inline_string: abc}]", "dictionaries: field not supported by outrider yet"},
		{"gzip.compressor.v3.Gzip", "decompressor_library"},
	} {
		yaml := strings.Replace(config(1), "gzip.decompressor.v3.Gzip, window_bits: 15, chunk_size: 8192, max_inflate_ratio: 1000", tc.lib, 1)
		b, err := bootstrap.Load(bootstrap.Source{YAML: yaml})
		if err == nil {
			_, err = server.New(server.Options{Bootstrap: b, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to mention %q", tc.lib, err, tc.want)
		}
	}
}

// The libraries check their ranges themselves too (xDS configs reach them
// without the bootstrap's validation).
func TestLibraryRanges(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  proto.Message
		want string
	}{
		{"envoy.compression.gzip.decompressor", &gzv3.Gzip{WindowBits: wrapperspb.UInt32(16)}, "window_bits: 16 not in [9, 15]"},
		{"envoy.compression.gzip.decompressor", &gzv3.Gzip{ChunkSize: wrapperspb.UInt32(10)}, "chunk_size: 10 not in [4096, 65536]"},
		{"envoy.compression.gzip.decompressor", &gzv3.Gzip{MaxInflateRatio: wrapperspb.UInt32(0)}, "max_inflate_ratio: 0 not in [1, 1032]"},
		{"envoy.compression.brotli.decompressor", &brv3.Brotli{ChunkSize: wrapperspb.UInt32(1 << 20)}, "chunk_size: 1048576 not in [4096, 65536]"},
		{"envoy.compression.zstd.decompressor", &zsv3.Zstd{ChunkSize: wrapperspb.UInt32(1)}, "chunk_size: 1 not in [4096, 65536]"},
	} {
		a, _ := anypb.New(tc.cfg)
		lf, err := decompressor.Libraries.Lookup(tc.name, a.GetTypeUrl())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := lf(a, decompressor.Scope{Store: stats.NewStore()}); err == nil || err.Error() != tc.want {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}
