#!/usr/bin/env bash
# Throughput of Debian's apache2 (event MPM) on loopback with and without mod_shield.
#
# Configurations, all measured in the same run, in alternating rounds (order rotated per round):
#   bare          no DoS module, keep-alive
#   evasive       mod_evasive, thresholds the load never reaches ("patrol")
#   shield        mod_shield, conf/shield.conf with counts the load never reaches ("patrol")
#   blocked       mod_shield with the client blocked: every request refused (429), one new
#                 TCP connection per request (wrk -H "Connection: close")
#   static-close  bare apache2 serving the static file, one new TCP connection per request
#   flood-bare    bare + mod_remoteip, a random X-Forwarded-For per request (keep-alive)
#   flood-shield  mod_shield patrol + mod_remoteip, same flood: every request a new client,
#                 so the site and page tables insert and evict all the time
#   shield-memcache, shield-redis
#                 mod_shield patrol sharing counts through DOSCache memcache:/redis: with a
#                 memcached / redis-server this script starts on loopback (BACKENDS=1)
#
# Per configuration it prints the median requests/s over the rounds, the range, and the
# server's CPU time per request (utime+stime of the httpd processes over the run / requests,
# and utime alone), a second view that does not depend on wrk's share of the machine. Then the
# ratios against the targets: of the medians, and the median of the per-round ratios (the
# verdict: pairs measured seconds apart share the machine's load).
#
# Environment:
#   ROUNDS=5 DURATION=5 (seconds per measurement) THREADS=1 CONNECTIONS=32 (wrk)
#   SERVER_THREADS=64   threads of the single event-MPM child
#   PIN=auto            auto|0|1: pin httpd to CPU 0 and wrk to CPU 1 (auto: when >= 2 CPUs)
#   FLOOD=1             0 skips the two flood configurations
#   BACKENDS=1          0 skips the memcache and redis configurations
#   MOD_SHIELD_SO=path  use this module instead of building with scripts/build-module release
#   KEEP=1              keep the temp directory (configs, error logs) after the run
# Loopback only; every server it started is stopped on exit, error or Ctrl-C.
set -euo pipefail
# shellcheck source=benches/common.sh
. "$(dirname "$0")/common.sh"

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
THREADS=${THREADS:-1}
CONNECTIONS=${CONNECTIONS:-32}
SERVER_THREADS=${SERVER_THREADS:-64}
PIN=${PIN:-auto}
FLOOD=${FLOOD:-1}
BACKENDS=${BACKENDS:-1}
KEEP=${KEEP:-0}
APACHE=/usr/sbin/apache2
MODULES=/usr/lib/apache2/modules
repo=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "httpd-throughput: $*" >&2; exit 1; }
for n in ROUNDS DURATION THREADS CONNECTIONS SERVER_THREADS; do
    [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer (got '${!n}')"
done
for tool in "$APACHE" wrk curl python3; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
[ -f "$MODULES/mod_evasive20.so" ] || die "mod_evasive missing (apt-get install libapache2-mod-evasive)"

so=${MOD_SHIELD_SO:-}
if [ -z "$so" ]; then
    so=$("$repo/scripts/build-module" release | tail -n 1)
fi
[ -f "$so" ] || die "module not found: $so"

# Pinning keeps wrk from competing with httpd for the same core.
server_cpu="" client_cpu=""
if [ "$PIN" = 1 ] || { [ "$PIN" = auto ] && [ "$(nproc)" -ge 2 ]; }; then
    server_cpu=0 client_cpu=1
fi
on_cpu() { # on_cpu CPU cmd...: run pinned when pinning is on
    local cpu=$1; shift
    if [ -n "$cpu" ]; then taskset -c "$cpu" "$@"; else "$@"; fi
}

work=$(mktemp -d /tmp/shield-bench.XXXXXX)
chmod 0755 "$work"
started=()  # pid files of the servers started by this script
backend_pids=()  # memcached / redis-server started by this script

stop_server() { # stop_server PIDFILE: TERM, wait up to 10 s, then KILL
    local pidfile=$1 pid i
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
    local f
    for f in "${started[@]}"; do stop_server "$f"; done
    for f in "${backend_pids[@]}"; do kill "$f" 2>/dev/null || true; done
    if [ "$KEEP" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM


# The static file: ~1 KiB of HTML.
docs=$work/htdocs
make_static_page "$docs"
path=/index.html

# The flood: each request claims a new client through X-Forwarded-For (half IPv4, half
# IPv6 in distinct /64s), which mod_remoteip turns into r->useragent_ip.
cat > "$work/flood.lua" <<'LUA'
local counter = 0
function setup(thread)
    counter = counter + 1
    thread:set("id", counter)
end
function init(args)
    math.randomseed(os.time() * 1000 + (id or 0))
end
local random, fmt = math.random, string.format
function request()
    local xff
    if random(2) == 1 then
        xff = fmt("%d.%d.%d.%d", random(1, 223), random(0, 255), random(0, 255), random(1, 254))
    else
        xff = fmt("2001:db8:%x:%x::1", random(0, 65535), random(0, 65535))
    end
    return wrk.format(nil, nil, { ["X-Forwarded-For"] = xff })
end
LUA

user_lines=""
[ "$(id -u)" = 0 ] && user_lines=$'User nobody\nGroup nogroup'

declare -A port_of
# start_server NAME EXTRA_CONFIG: writes $work/NAME/httpd.conf, starts it, waits until it serves.
start_server() {
    local name=$1 extra=$2 root=$work/$1 port
    port=$(free_port)
    mkdir -p "$root/blocks"
    chmod 0755 "$root"
    chmod 0777 "$root/blocks"
    cat > "$root/httpd.conf" <<CONF
ServerRoot $root
ServerName 127.0.0.1
Listen 127.0.0.1:$port
PidFile $root/httpd.pid
DefaultRuntimeDir $root
# No access log; the error log only gets start/stop lines at this level.
ErrorLog $root/error.log
LogLevel warn
$user_lines
LoadModule mpm_event_module $MODULES/mod_mpm_event.so
LoadModule authz_core_module $MODULES/mod_authz_core.so
LoadModule mime_module $MODULES/mod_mime.so
TypesConfig /etc/mime.types
DocumentRoot $docs
<Directory $docs>
    Require all granted
</Directory>
# One child with all the threads, so pinning to one CPU is meaningful.
StartServers 1
ServerLimit 1
ThreadLimit $SERVER_THREADS
ThreadsPerChild $SERVER_THREADS
MaxRequestWorkers $SERVER_THREADS
MinSpareThreads 1
MaxSpareThreads $((SERVER_THREADS * 2))
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 5
$extra
CONF
    "$APACHE" -t -f "$root/httpd.conf" 2>"$root/configtest.log" \
        || die "$name: bad config: $(cat "$root/configtest.log")"
    started+=("$root/httpd.pid")
    on_cpu "$server_cpu" "$APACHE" -f "$root/httpd.conf" -k start \
        || die "$name: apache2 did not start: $(cat "$root/error.log" 2>/dev/null)"
    local i code=000
    for i in $(seq 100); do
        # From 127.0.0.2: another client, so the probe never counts for wrk's 127.0.0.1.
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 --interface 127.0.0.2 \
            "http://127.0.0.1:$port$path" || true)
        [ "$code" = 200 ] && break
        sleep 0.1
    done
    [ "$code" = 200 ] || die "$name: not serving (HTTP $code): $(tail -n 5 "$root/error.log")"
    port_of[$name]=$port
}

shield_load="LoadModule shield_module $so"
# conf/shield.conf as shipped, with counts the load can never reach.
shield_patrol="$shield_load
Include $repo/conf/shield.conf
DOSCache shmcb:none(524288)
DOSSiteCount 1000000000
DOSPageCount 1000000000
DOSLogDir @BLOCKS@"
remoteip="LoadModule remoteip_module $MODULES/mod_remoteip.so
RemoteIPHeader X-Forwarded-For
RemoteIPInternalProxy 127.0.0.1"

echo "load before start: $(cut -d' ' -f1-3 /proc/loadavg)"
start_server bare ""
start_server evasive "LoadModule evasive20_module $MODULES/mod_evasive20.so
<IfModule mod_evasive20.c>
    DOSHashTableSize 3097
    DOSPageCount 1000000
    DOSSiteCount 1000000
    DOSPageInterval 1
    DOSSiteInterval 1
    DOSBlockingPeriod 10
    DOSLogDir $work/evasive/blocks
</IfModule>"
start_server shield "${shield_patrol//@BLOCKS@/$work/shield/blocks}"
start_server blocked "$shield_load
Include $repo/conf/shield.conf
DOSCache shmcb:none(524288)
DOSPageCount 1
DOSBlockingPeriod 86400
DOSLogDir $work/blocked/blocks"
if [ "$FLOOD" = 1 ]; then
    start_server flood-bare "$remoteip"
    start_server flood-shield "$remoteip
${shield_patrol//@BLOCKS@/$work/flood-shield/blocks}"
fi

if [ "$BACKENDS" = 1 ]; then
    mc_port=$(free_port)
    memcached -l 127.0.0.1 -p "$mc_port" -U 0 -u nobody >/dev/null 2>&1 &
    backend_pids+=($!)
    rd_port=$(free_port)
    redis-server --port "$rd_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
    backend_pids+=($!)
    for i in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$mc_port") 2>/dev/null \
            && (exec 3<>"/dev/tcp/127.0.0.1/$rd_port") 2>/dev/null && break
        sleep 0.1
    done
    start_server shield-memcache "${shield_patrol//@BLOCKS@/$work/shield-memcache/blocks}
DOSCache memcache:127.0.0.1:$mc_port"
    start_server shield-redis "${shield_patrol//@BLOCKS@/$work/shield-redis/blocks}
DOSCache redis:127.0.0.1:$rd_port"
fi

# Block the client of the "blocked" server: the 2nd request to a page crosses DOSPageCount 1.
url_blocked="http://127.0.0.1:${port_of[blocked]}$path"
codes=""
for i in 1 2 3; do
    codes+="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url_blocked") "
done
[ "$codes" = "200 429 429 " ] || die "blocked server: expected '200 429 429', got '$codes'"

# Configuration table: name -> server, wrk options, expected responses.
configs=(bare evasive shield blocked static-close)
[ "$FLOOD" = 1 ] && configs+=(flood-bare flood-shield)
[ "$BACKENDS" = 1 ] && configs+=(shield-memcache shield-redis)
server_for() { case $1 in static-close) echo bare ;; *) echo "$1" ;; esac; }
wrk_opts_for() {
    case $1 in
        blocked | static-close) echo "-H Connection:close" ;;
        flood-*) echo "-s $work/flood.lua" ;;
        *) echo "" ;;
    esac
}

# CPU ticks of a server (its parent and children): "<utime> <stime>".
server_ticks() {
    local pid p usr=0 sys=0 u k
    pid=$(cat "$work/$1/httpd.pid")
    for p in $pid $(ps -o pid= --ppid "$pid"); do
        [ -r "/proc/$p/stat" ] || continue
        # Fields after the ")" of comm: utime is the 12th, stime the 13th.
        read -r u k < <(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12, $13}')
        usr=$((usr + u)) sys=$((sys + k))
    done
    echo "$usr $sys"
}
hz=$(getconf CLK_TCK)

declare -A rps_of cpu_of usr_of
# measure CONFIG SECONDS [record]: one wrk run; checks the response codes; records the figures.
measure() {
    local cfg=$1 secs=$2 record=${3:-} server out u0 s0 u1 s1 reqs rps non2xx cpu usr
    server=$(server_for "$cfg")
    read -r u0 s0 < <(server_ticks "$server")
    # shellcheck disable=SC2046  # wrk options are word-split on purpose
    out=$(on_cpu "$client_cpu" timeout $((secs + 30)) wrk -t "$THREADS" -c "$CONNECTIONS" \
        -d "${secs}s" $(wrk_opts_for "$cfg") "http://127.0.0.1:${port_of[$server]}$path" 2>&1) \
        || die "$cfg: wrk failed: $out"
    read -r u1 s1 < <(server_ticks "$server")
    reqs=$(sed -n 's/^ *\([0-9][0-9]*\) requests in.*/\1/p' <<<"$out")
    rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' <<<"$out")
    non2xx=$(sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' <<<"$out")
    non2xx=${non2xx:-0}
    if [ -z "$reqs" ] || [ -z "$rps" ] || [ "$reqs" -eq 0 ]; then die "$cfg: no result from wrk: $out"; fi
    if [ "$cfg" = blocked ]; then
        [ "$non2xx" = "$reqs" ] || die "$cfg: only $non2xx of $reqs requests were refused"
    else
        [ "$non2xx" = 0 ] || die "$cfg: $non2xx of $reqs responses were not 2xx"
    fi
    if grep -q 'Socket errors' <<<"$out"; then
        echo "  note: $cfg: $(grep 'Socket errors' <<<"$out" | sed 's/^ *//')" >&2
    fi
    if [ -n "$record" ]; then
        # Server CPU per request in µs: total (user + kernel) and user space only.
        cpu=$(awk -v t=$((u1 - u0 + s1 - s0)) -v hz="$hz" -v n="$reqs" 'BEGIN{printf "%.2f", t / hz * 1e6 / n}')
        usr=$(awk -v t=$((u1 - u0)) -v hz="$hz" -v n="$reqs" 'BEGIN{printf "%.2f", t / hz * 1e6 / n}')
        rps_of[$cfg]+="$rps "
        cpu_of[$cfg]+="$cpu "
        usr_of[$cfg]+="$usr "
        printf '  %-13s %10.0f req/s  %7s µs CPU/req (user %s)\n' "$cfg" "$rps" "$cpu" "$usr"
    fi
}

median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END{ if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2 }'; }
minmax() { tr ' ' '\n' | grep . | sort -g | awk 'NR==1{lo=$1} {hi=$1} END{printf "%.0f-%.0f", lo, hi}'; }

echo "pinning: httpd on CPU ${server_cpu:-any}, wrk on CPU ${client_cpu:-any}; wrk -t $THREADS -c $CONNECTIONS, ${DURATION}s x $ROUNDS rounds"
echo "warm-up (1 s each, not counted)"
for cfg in "${configs[@]}"; do measure "$cfg" 1; done

n=${#configs[@]}
for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS (load $(cut -d' ' -f1 /proc/loadavg))"
    for k in $(seq 0 $((n - 1))); do
        cfg=${configs[$(((k + round - 1) % n))]}
        measure "$cfg" "$DURATION" record
    done
done

echo
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
printf '%-13s %12s %15s %11s %12s\n' config "median req/s" "range" "µs CPU/req" "µs user/req"
declare -A med
for cfg in "${configs[@]}"; do
    med[$cfg]=$(median <<<"${rps_of[$cfg]}")
    printf '%-13s %12.0f %15s %11.2f %12.2f\n' "$cfg" "${med[$cfg]}" "$(minmax <<<"${rps_of[$cfg]}")" \
        "$(median <<<"${cpu_of[$cfg]}")" "$(median <<<"${usr_of[$cfg]}")"
done

echo
ratio() { awk -v a="${med[$1]}" -v b="${med[$2]}" 'BEGIN{printf "%.3f", a / b}'; }
# Median of the per-round ratios: each pair measured seconds apart, so slow drifts of the
# machine's load cancel out better than in the ratio of the medians.
paired() {
    paste -d' ' <(tr ' ' '\n' <<<"${rps_of[$1]}" | grep .) <(tr ' ' '\n' <<<"${rps_of[$2]}" | grep .) \
        | awk '{printf "%s ", $1 / $2}' | median | awk '{printf "%.3f", $1}'
}
verdict() { awk -v r="$1" -v t="$2" 'BEGIN{print (r >= t) ? "met" : "missed"}'; }
printf '%-26s %15s %15s   %s\n' ratio "of medians" "paired median" target
row() { # row LABEL A B [TARGET]
    local r p
    r=$(ratio "$2" "$3")
    p=$(paired "$2" "$3")
    if [ -n "${4:-}" ]; then
        # The verdict is the paired median's (the pairs share the machine's load).
        printf '%-26s %15s %15s   >= %s  %s\n' "$1" "$r" "$p" "$4" "$(verdict "$p" "$4")"
    else
        printf '%-26s %15s %15s\n' "$1" "$r" "$p"
    fi
}
row "shield / bare" shield bare 0.99
row "shield / evasive" shield evasive 1.00
row "evasive / bare" evasive bare
row "blocked / static-close" blocked static-close 1.00
if [ "$FLOOD" = 1 ]; then row "flood-shield / flood-bare" flood-shield flood-bare 0.97; fi
if [ "$BACKENDS" = 1 ]; then
    row "shield-memcache / bare" shield-memcache bare
    row "shield-redis / bare" shield-redis bare
fi
