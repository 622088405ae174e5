go test fuzz v1
string("envoy.pb")
[]byte("\n\x05\xff\xff")
