// Package grpcstatus maps HTTP status codes to gRPC status codes as Envoy's
// Grpc::Utility::httpToGrpcStatus does. The connection manager uses it for
// gRPC local replies, the access log's grpc_status_filter for responses
// without a grpc-status.
package grpcstatus

// FromHTTP is the gRPC status Envoy derives from an HTTP status.
func FromHTTP(code int) int {
	switch code {
	case 400:
		return 13 // INTERNAL
	case 401:
		return 16 // UNAUTHENTICATED
	case 403:
		return 7 // PERMISSION_DENIED
	case 404:
		return 12 // UNIMPLEMENTED
	case 429, 502, 503, 504:
		return 14 // UNAVAILABLE
	}
	return 2 // UNKNOWN
}
