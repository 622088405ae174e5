module github.com/outrider-proxy/outrider

go 1.26
