package hcm

import "github.com/outrider-proxy/outrider/telemetry/stats"

// hcmStats are Envoy's http.<stat_prefix>.* stats, resolved once per config.
type hcmStats struct {
	cxTotal, cxHTTP1Total, cxHTTP2Total, cxDestroy, cxIdleTimeout, cxMaxDurationReached, cxProtocolError, cxDrainClose *stats.Counter
	cxActive, cxHTTP1Active, cxHTTP2Active, rqActive                                                                   *stats.Gauge
	rqTotal, rqHTTP1Total, rqHTTP2Total, rqTimeout, rqIdleTimeout, rqHeadersTimeout, rqMaxReached, rqTooLarge          *stats.Counter
	rqCompleted, rqRespCompleted, noRoute, noCluster, rsTooLarge, rqRxReset, rqTxReset                                 *stats.Counter
	rqClass                                                                                                            [6]*stats.Counter // [1..5] = downstream_rq_1xx..5xx
	cxUpgradesTotal                                                                                                    *stats.Counter
	cxUpgradesActive                                                                                                   *stats.Gauge
	droppedUnderscores, rejectedUnderscores                                                                            *stats.Counter
	rqTooManyPrematureResets                                                                                           *stats.Counter
	rqTime                                                                                                             *stats.Histogram
	flood                                                                                                              *floodStats // http2.*, the codec's flood stats
}

func newHCMStats(st *stats.Store, prefix string) *hcmStats {
	s := st.Scope("http." + prefix)
	h := &hcmStats{
		cxTotal:              s.Counter("downstream_cx_total"),
		cxHTTP1Total:         s.Counter("downstream_cx_http1_total"),
		cxHTTP2Total:         s.Counter("downstream_cx_http2_total"),
		cxDestroy:            s.Counter("downstream_cx_destroy"),
		cxIdleTimeout:        s.Counter("downstream_cx_idle_timeout"),
		cxMaxDurationReached: s.Counter("downstream_cx_max_duration_reached"),
		cxProtocolError:      s.Counter("downstream_cx_protocol_error"),
		cxDrainClose:         s.Counter("downstream_cx_drain_close"),
		cxActive:             s.Gauge("downstream_cx_active"),
		cxHTTP1Active:        s.Gauge("downstream_cx_http1_active"),
		cxHTTP2Active:        s.Gauge("downstream_cx_http2_active"),
		rqActive:             s.Gauge("downstream_rq_active"),
		rqTotal:              s.Counter("downstream_rq_total"),
		rqHTTP1Total:         s.Counter("downstream_rq_http1_total"),
		rqHTTP2Total:         s.Counter("downstream_rq_http2_total"),
		rqTimeout:            s.Counter("downstream_rq_timeout"),
		rqIdleTimeout:        s.Counter("downstream_rq_idle_timeout"),
		rqHeadersTimeout:     s.Counter("downstream_rq_header_timeout"),
		rqMaxReached:         s.Counter("downstream_rq_max_duration_reached"),
		rqTooLarge:           s.Counter("downstream_rq_too_large"),
		rqCompleted:          s.Counter("downstream_rq_completed"),
		rqRespCompleted:      s.Counter("downstream_rq_response_before_rq_complete"),
		noRoute:              s.Counter("no_route"),
		noCluster:            s.Counter("no_cluster"),
		rsTooLarge:           s.Counter("rs_too_large"),
		rqRxReset:            s.Counter("downstream_rq_rx_reset"),
		rqTxReset:            s.Counter("downstream_rq_tx_reset"),
		rqTime:               s.Histogram("downstream_rq_time", stats.Milliseconds),
		droppedUnderscores:   s.Counter("dropped_headers_with_underscores"),
		cxUpgradesTotal:      s.Counter("downstream_cx_upgrades_total"),
		cxUpgradesActive:     s.Gauge("downstream_cx_upgrades_active"),
		rejectedUnderscores:  s.Counter("requests_rejected_with_underscores_in_headers"),

		rqTooManyPrematureResets: s.Counter("downstream_rq_too_many_premature_resets"),
		flood:                    newFloodStats(st),
	}
	for i, n := range []string{"", "downstream_rq_1xx", "downstream_rq_2xx", "downstream_rq_3xx", "downstream_rq_4xx", "downstream_rq_5xx"} {
		if n != "" {
			h.rqClass[i] = s.Counter(n)
		}
	}
	return h
}

func (h *hcmStats) response(code int) {
	if c := code / 100; c >= 1 && c <= 5 {
		h.rqClass[c].Inc()
	}
}
