# shellcheck shell=bash
# Shared by the benchmark scripts (sourced, not run).

# A free TCP port on loopback.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# make_static_page DIR: the benchmark's static file, ~1 KiB of HTML, as DIR/index.html.
make_static_page() {
    mkdir -p "$1"
    {
        echo '<!DOCTYPE html><html><head><title>bench</title></head><body>'
        for i in $(seq 15); do echo "<p>Line $i of the static benchmark page, padding to about one KiB.</p>"; done
        echo '</body></html>'
    } > "$1/index.html"
    chmod -R a+rX "$1"
}
