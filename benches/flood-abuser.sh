#!/usr/bin/env bash
# The store under flood, measured: an abuser asks for one page 5 times a second (50 requests)
# against DOSPageCount 10 per 10 s, while wrk sends one-request clients (a new
# X-Forwarded-For per request, mod_remoteip) as fast as this machine drives apache2. Prints the
# flood's rate, how many of the abuser's 50 requests were served (10 is exact), and the
# store's eviction counters. A measurement, not a test: nothing here passes or fails.
#
# Environment:
#   MOD_SHIELD_SO=path   the module to measure (default: scripts/build-module release)
#   DOSCACHE="shmcb:none(65536)"   a DOSCache value (default: none, the module's default)
#   WRK_THREADS=2 WRK_CONNECTIONS=64   the flood
set -euo pipefail
# shellcheck source=benches/common.sh
. "$(dirname "$0")/common.sh"
repo=$(cd "$(dirname "$0")/.." && pwd)
APACHE=/usr/sbin/apache2
MODULES=/usr/lib/apache2/modules
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-64}
so=${MOD_SHIELD_SO:-$("$repo/scripts/build-module" release | tail -n 1)}
work=$(mktemp -d /tmp/shield-flood.XXXXXX)
trap '[ -f "$work/httpd.pid" ] && kill "$(cat "$work/httpd.pid")" 2>/dev/null; sleep 1; rm -rf "$work"' EXIT
chmod 755 "$work"
make_static_page "$work/htdocs"
echo results > "$work/htdocs/search"
mkdir -p "$work/blocks" && chmod 777 "$work/blocks"
port=$(free_port)
cache_line=""
[ -n "${DOSCACHE:-}" ] && cache_line="DOSCache $DOSCACHE"
cat > "$work/httpd.conf" <<CONF
ServerRoot $work
ServerName localhost
Listen 127.0.0.1:$port
PidFile $work/httpd.pid
ErrorLog $work/error.log
LogLevel warn
User nobody
Group nogroup
LoadModule mpm_event_module $MODULES/mod_mpm_event.so
LoadModule authz_core_module $MODULES/mod_authz_core.so
LoadModule remoteip_module $MODULES/mod_remoteip.so
LoadModule shield_module $so
RemoteIPHeader X-Forwarded-For
RemoteIPInternalProxy 127.0.0.1
DocumentRoot $work/htdocs
<Directory $work/htdocs>
    Require all granted
</Directory>
KeepAlive On
MaxKeepAliveRequests 0
$cache_line
DOSSiteCount 100000000
DOSSiteInterval 60
DOSPageCount 10
DOSPageInterval 10
DOSBlockingPeriod 30
DOSLogDir $work/blocks
<Location /shield-status>
    SetHandler shield-handler
    DOSEnabled off
</Location>
CONF
"$APACHE" -f "$work/httpd.conf" -k start
for _ in $(seq 50); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/shield-status?auto" && break
    sleep 0.1
done
cat > "$work/flood.lua" <<'LUA'
-- Each request claims a new client: a counter per wrk thread, spread over 198.18.0.0/15 and up.
local n = 0
local base = math.random(0, 1023) * 65536
request = function()
    n = n + 1
    local a = base + n
    local f = math.floor
    local xff = string.format("%d.%d.%d.%d", 198 + f(a / 16777216) % 32, f(a / 65536) % 256,
        f(a / 256) % 256, a % 256)
    return wrk.format("GET", "/index.html", { ["X-Forwarded-For"] = xff })
end
LUA
wrk -t "$WRK_THREADS" -c "$WRK_CONNECTIONS" -d 13s -s "$work/flood.lua" "http://127.0.0.1:$port/" > "$work/wrk.txt" &
wrk_pid=$!
sleep 1
served=0
start=$(date +%s.%N)
for i in $(seq 0 49); do
    target=$(echo "$start + $i * 0.2" | bc)
    now=$(date +%s.%N)
    wait_s=$(echo "$target - $now" | bc)
    case $wait_s in -*|0) ;; *) sleep "$wait_s" ;; esac
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'X-Forwarded-For: 192.0.2.77' "http://127.0.0.1:$port/search" || true)
    [ "$code" = 200 ] && served=$((served + 1))
done
wait "$wrk_pid"
rate=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
auto=$(curl -s "http://127.0.0.1:$port/shield-status?auto")
echo "DOSCache: ${DOSCACHE:-module default} ($(grep '^PageCapacity' <<<"$auto"))"
echo "flood: $rate one-request clients a second (wrk -t$WRK_THREADS -c$WRK_CONNECTIONS)"
echo "abuser: served $served of 50 (DOSPageCount 10 per 10 s: 10 is exact)"
grep -E '^(SiteEvicted|PageEvicted|StoreBlocksEvicted):' <<<"$auto" || true
grep -c 'is too small for this traffic' "$work/error.log" | sed 's/^/pressure warnings: /' || true
