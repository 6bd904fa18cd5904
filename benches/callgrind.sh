#!/usr/bin/env bash
# Instructions (and estimated cycles) per request of Debian's apache2 with mod_shield, by callgrind.
#
# Runs `apache2 -X` (one process, event MPM) under `valgrind --tool=callgrind`, warms it up,
# serves REQUESTS requests of a ~1 KiB static file with ab between two marker requests (404s
# answered by a local ErrorDocument, i.e. an internal redirect, on which callgrind dumps its
# counters), and reads the dump of that window:
#   - httpd total: every user-space instruction the process executed in the window,
#   - mod_shield: the inclusive cost of its per-request hooks (post_read_request,
#     translate_name, map_to_storage, type_checker, fixups, insert_filter,
#     insert_error_filter, log_transaction, handler; symbols like
#     mod_shield::ffi::hooks::fixups; ffi::request:: in builds before the rename); a handler
#     that sends its own body (the under-attack page) includes httpd's output filters,
#     so there compare the totals,
# each divided by REQUESTS. Configurations:
#   shield        mod_shield, conf/shield.conf with counts never reached ("patrol"), keep-alive
#   bare          no DoS module, keep-alive
#   evasive       mod_evasive with counts never reached, keep-alive
#   blocked       mod_shield with the client blocked (every request refused with 429),
#                 a new connection per request
#   static-close  bare, serving the file with a new connection per request
#   flood         mod_shield behind mod_remoteip, every request from a new client (a rotating
#                 X-Forwarded-For over keep-alive, sent by a small Python client): the cost of
#                 a table insert (and, once full, an eviction) per request
#   flood-bare    the same client and mod_remoteip, no DoS module
#   farm          mod_shield patrol with DOSCache redis:… on a redis-server this script starts:
#                 every request spends from the client's lease (no round trip at these counts)
#   farm-crawl    the same, every request a page the client has not asked for yet (one grant,
#                 one round trip to redis, per request: a crawler's cost)
#   under-attack  mod_shield with DOSUnderAttack on, every request a browser navigation
#                 without a pass (Accept: text/html): each answered with the challenge page
#                 (429), keep-alive; compare with bare, the same file served
# The difference of totals (shield - bare) cross-checks the inclusive figure. Kernel work
# (TCP, syscalls) is not counted by callgrind.
#
# Environment:
#   REQUESTS=2000   requests per configuration
#   CONCURRENCY=1   ab -c
#   CONFIGS="shield bare evasive blocked static-close flood flood-bare"
#   MOD_SHIELD_SO=path  use this module instead of building with scripts/build-module release
#   KEEP=1          keep the temp directory (configs, callgrind.out files, annotate.txt)
#   TIME_LIMIT=100  seconds each valgrind run may take (then it is killed)
#   SHIELD_EXTRA=LINES  more configuration lines for every mod_shield configuration (e.g.
#                   "DOSPrefixCount 24 off", to see what counting a network costs)
#   VALGRIND_OPTS   read by valgrind itself: with KEEP=1, CACHE_SIM=0 and
#                   "--dump-instr=yes --dump-line=no" the kept dumps can be read by
#                   benches/callgrind-inline.py (costs per function, inlined code included)
#   CACHE_SIM=1     also simulate the caches (--cache-sim=yes, about 1.5x slower) and print
#                   estimated cycles per request, 0 for instructions only
#
# Estimated cycles: Ir + 10 x L1 misses (instruction fetch, data read, data write) + 100 x
# last-level misses, callgrind's usual estimate, with the caches of this machine. It shows what
# instruction counts alone miss: httpd's code and data do not fit the L1 caches, so the
# module's code is fetched again from L2 on every request (about one miss per 64-byte line it
# runs), and so are the records and settings it reads, and what it evicts of httpd's.
set -euo pipefail
# shellcheck source=benches/common.sh
. "$(dirname "$0")/common.sh"

REQUESTS=${REQUESTS:-2000}
CONCURRENCY=${CONCURRENCY:-1}
CONFIGS=${CONFIGS:-shield bare evasive blocked static-close flood flood-bare}
TIME_LIMIT=${TIME_LIMIT:-100}
KEEP=${KEEP:-0}
SHIELD_EXTRA=${SHIELD_EXTRA:-}
CACHE_SIM=${CACHE_SIM:-1}
APACHE=/usr/sbin/apache2
MODULES=/usr/lib/apache2/modules
repo=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "callgrind: $*" >&2; exit 1; }
for n in REQUESTS CONCURRENCY TIME_LIMIT; do
    [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer (got '${!n}')"
done
[[ $CACHE_SIM =~ ^[01]$ ]] || die "CACHE_SIM must be 0 or 1 (got '$CACHE_SIM')"
cache_opts=()
[ "$CACHE_SIM" = 1 ] && cache_opts=(--cache-sim=yes)
for tool in "$APACHE" valgrind callgrind_annotate ab curl python3; do
    command -v "$tool" >/dev/null || die "$tool not found"
done

so=${MOD_SHIELD_SO:-}
if [[ " $CONFIGS " == *" shield "* || " $CONFIGS " == *" blocked "* || " $CONFIGS " == *" flood "* || " $CONFIGS " == *" under-attack "* || " $CONFIGS " == *" farm"* ]] && [ -z "$so" ]; then
    so=$("$repo/scripts/build-module" release | tail -n 1)
fi

work=$(mktemp -d /tmp/shield-callgrind.XXXXXX)
chmod 0755 "$work"
vg_pid=""
cleanup() {
    if [ -n "$vg_pid" ] && kill -0 "$vg_pid" 2>/dev/null; then
        kill -TERM "$vg_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$vg_pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$vg_pid" 2>/dev/null || true
    fi
    if [ -n "${redis_pid:-}" ]; then kill "$redis_pid" 2>/dev/null || true; fi
    if [ "$KEEP" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
# The farm configurations' engine.
redis_pid=""
if [[ " $CONFIGS " == *" farm"* ]]; then
    redis_port=$(free_port)
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
    redis_pid=$!
    sleep 0.5
fi
trap 'exit 130' INT
trap 'exit 143' TERM

docs=$work/htdocs
make_static_page "$docs"
path=/index.html

# As root, apache2 would switch to User after callgrind opened its output file; so the whole
# valgrind run is started as nobody instead (apache2 then stays who it is).
as_user=()
[ "$(id -u)" = 0 ] && as_user=(setpriv --reuid=nobody --regid=nogroup --clear-groups)

shield_conf() { # shield_conf EXTRA...: the shipped configuration plus overrides
    printf 'LoadModule shield_module %s\nInclude %s/conf/shield.conf\nDOSCache shmcb:none(524288)\nDOSLogDir %s\n' \
        "$so" "$repo" "$1"
    shift
    printf '%s\n' "$@"
    if [ -n "$SHIELD_EXTRA" ]; then printf '%s\n' "$SHIELD_EXTRA"; fi
}
remoteip_conf() {
    printf 'LoadModule remoteip_module %s/mod_remoteip.so\nRemoteIPHeader X-Forwarded-For\nRemoteIPInternalProxy 127.0.0.1\n' \
        "$MODULES"
}
# crawl_client URL FIRST N: N keep-alive GETs of URL?n=FIRST.., each a page the client has not
# asked for (DOSCanonical off); fails unless every answer is 200.
crawl_client() {
    python3 - "$1" "$2" "$3" <<'PY'
import http.client, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
first, n, bad = int(sys.argv[2]), int(sys.argv[3]), 0
for i in range(first, first + n):
    conn.request("GET", "%s?n=%d" % (u.path, i))
    r = conn.getresponse()
    r.read()
    bad += r.status != 200
sys.exit(1 if bad else 0)
PY
}
# flood_client URL N: N keep-alive GETs, each with a new X-Forwarded-For (2001:db8:<i>::1, a
# new /64 each time, so every request is a new client); fails unless every answer is 200.
flood_client() {
    python3 - "$1" "$2" <<'PY'
import http.client, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
bad = 0
for i in range(int(sys.argv[2])):
    conn.request("GET", u.path, headers={"X-Forwarded-For": "2001:db8:%x:%x::1" % (i >> 16, i & 0xffff)})
    r = conn.getresponse()
    r.read()
    bad += r.status != 200
sys.exit(1 if bad else 0)
PY
}
extra_for() { # extra_for NAME ROOT
    case $1 in
        bare | static-close) ;;
        flood-bare) remoteip_conf ;;
        flood) remoteip_conf
            shield_conf "$2/blocks" "DOSSiteCount 1000000000" "DOSPageCount 1000000000" ;;
        shield) shield_conf "$2/blocks" "DOSSiteCount 1000000000" "DOSPageCount 1000000000" ;;
        blocked) shield_conf "$2/blocks" "DOSPageCount 1" "DOSBlockingPeriod 86400" ;;
        farm) shield_conf "$2/blocks" "DOSSiteCount 1000000000" \
            "DOSPageCount 1000000000" "DOSCache redis:127.0.0.1:$redis_port" ;;
        farm-crawl) shield_conf "$2/blocks" "DOSSiteCount 1000000000" \
            "DOSPageCount 1000000000" "DOSCache redis:127.0.0.1:$redis_port" "DOSCanonical off" ;;
        under-attack) shield_conf "$2/blocks" "DOSSiteCount 1000000000" \
            "DOSPageCount 1000000000" "DOSUnderAttack on" ;;
        evasive) cat <<CONF
LoadModule evasive20_module $MODULES/mod_evasive20.so
DOSHashTableSize 3097
DOSPageCount 1000000
DOSSiteCount 1000000
DOSPageInterval 1
DOSSiteInterval 1
DOSLogDir $2/blocks
CONF
            ;;
        *) die "unknown configuration '$1' (shield, bare, evasive, blocked, static-close, flood, flood-bare, farm, farm-crawl, under-attack)" ;;
    esac
}

# hook_costs DUMP: prints "<total Ir> <inclusive Ir of mod_shield's per-request hooks>", then,
# with the cache simulation, "<total est. cycles> <hooks' est. cycles>".
# callgrind_annotate splits a function's inclusive cost by source file when code is inlined, so
# the hooks' cost is read from the dump itself: the inclusive cost recorded on every call into
# a hook (the line after "calls="), summed over all call sites. The hooks never call each
# other, so nothing is counted twice.
hook_costs() {
    python3 - "$1" <<'PY'
import re, sys
HOOKS = re.compile(r"^mod_shield::ffi::((hooks|request)::(post_read_request|translate_name|map_to_storage|type_checker|fixups|insert_filter|insert_error_filter|log_transaction)|handler::handler)$")
names, target, after_calls = {}, False, False
events, total, hooks = ["Ir"], None, None
with open(sys.argv[1]) as f:
    for line in f:
        if after_calls:
            after_calls = False
            if target:
                # "<position> <cost per event...>" (one position column: no --dump-instr)
                # (trailing zero costs may be left out)
                costs = [int(x) for x in line.split()[1:]]
                costs += [0] * (len(events) - len(costs))
                hooks = costs if hooks is None else [a + b for a, b in zip(hooks, costs)]
            continue
        if line.startswith(("fn=", "cfn=")):
            m = re.match(r"c?fn=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
            if m and m.group(2) is not None:
                names[m.group(1)] = m.group(2)
            if line.startswith("cfn=") and m:
                target = bool(HOOKS.match(names.get(m.group(1), "")))
        elif line.startswith("calls="):
            after_calls = True
        elif line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith(("summary:", "totals:")):
            total = [int(x) for x in line.split()[1:]]
            total += [0] * (len(events) - len(total))
hooks = hooks or [0] * len(events)
def cycles(v):
    e = dict(zip(events, v))
    l1 = e.get("I1mr", 0) + e.get("D1mr", 0) + e.get("D1mw", 0)
    ll = e.get("ILmr", 0) + e.get("DLmr", 0) + e.get("DLmw", 0)
    return e["Ir"] + 10 * l1 + 100 * ll
out = [total[0], hooks[0]]
if "I1mr" in events:
    out += [cycles(total), cycles(hooks)]
print(*out)
PY
}

# run_config NAME: prints "<total Ir> <mod_shield inclusive Ir>" for REQUESTS requests.
run_config() {
    local name=$1 root=$work/$1 port keepalive=-k expect=200
    local headers=()
    case $name in
        blocked) keepalive="" expect=429 ;;
        under-attack) expect=429 headers=(-H "Accept: text/html") ;;
        static-close) keepalive="" ;;
    esac
    port=$(free_port)
    mkdir -p "$root/blocks" "$root/out"
    cat > "$root/httpd.conf" <<CONF
ServerRoot $root
ServerName 127.0.0.1
Listen 127.0.0.1:$port
PidFile $root/httpd.pid
DefaultRuntimeDir $root
ErrorLog $root/error.log
LogLevel warn
LoadModule mpm_event_module $MODULES/mod_mpm_event.so
LoadModule authz_core_module $MODULES/mod_authz_core.so
LoadModule mime_module $MODULES/mod_mime.so
TypesConfig /etc/mime.types
DocumentRoot $docs
<Directory $docs>
    Require all granted
</Directory>
ThreadsPerChild 4
ThreadLimit 4
MaxRequestWorkers 4
KeepAlive On
MaxKeepAliveRequests 0
ErrorDocument 404 /index.html
$(extra_for "$name" "$root")
CONF
    if [ ${#as_user[@]} -gt 0 ]; then chown -R nobody:nogroup "$root"; fi
    "${as_user[@]}" "$APACHE" -t -f "$root/httpd.conf" 2>"$root/configtest.log" \
        || die "$name: bad config: $(cat "$root/configtest.log")"

    # -X: one process, no detaching. Callgrind dumps (and restarts) its counters each time httpd
    # enters ap_internal_redirect, which only the markers cause (a 404 whose ErrorDocument is a
    # local URL): one before and one after the measured requests delimit the window, so dump .2
    # holds just those requests (plus parts of the two markers, < 0.1 % at 2000 requests). No
    # vgdb needed. The markers come from 127.0.0.2 so a blocked 127.0.0.1 does not refuse them,
    # and go to two paths so neither crosses a count.
    timeout -s KILL "$TIME_LIMIT" "${as_user[@]}" valgrind --tool=callgrind "${cache_opts[@]}" --trace-children=no \
        --vgdb=no --dump-before=ap_internal_redirect \
        --callgrind-out-file="$root/out/callgrind.out" \
        "$APACHE" -X -DFOREGROUND -f "$root/httpd.conf" >"$root/valgrind.log" 2>&1 &
    vg_pid=$!
    local url="http://127.0.0.1:$port$path" code=000
    marker() {
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 --interface 127.0.0.2 \
            "http://127.0.0.1:$port/marker-$1" || true)
        [ "$code" = 404 ] || die "$name: marker request $1 got HTTP $code"
    }
    for _ in $(seq 300); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url" || true)
        [ "$code" = 200 ] && break
        kill -0 "$vg_pid" 2>/dev/null || die "$name: apache2 under valgrind exited: $(tail -n 20 "$root/valgrind.log")"
        sleep 0.2
    done
    [ "$code" = 200 ] || die "$name: not serving (HTTP $code)"
    if [ "$name" = blocked ]; then
        # The probe above was the 1st request to the page; the 2nd crosses DOSPageCount 1.
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 "$url" || true)
        [ "$code" = 429 ] || die "$name: priming request got HTTP $code, not 429"
    fi
    # Warm-up (lazy initialisation, first table inserts), then the window.
    ab -q $keepalive "${headers[@]}" -n 50 -c "$CONCURRENCY" -s 30 "$url" >/dev/null
    if [ "$name" = farm-crawl ]; then
        crawl_client "$url" 0 500 || die "$name: warm-up crawl not all served"
        marker 1
        crawl_client "$url" 1000000 "$REQUESTS" || die "$name: crawl requests not all served"
        marker 2
        kill -TERM "$vg_pid"
        wait "$vg_pid" 2>/dev/null || true
        vg_pid=""
        finish_config "$name" "$root"
        return
    fi
    if [[ $name == flood* ]]; then
        # Fill the tables first, so the window pays evictions as a long flood does.
        flood_client "$url" 3000 || die "$name: warm-up flood not all served"
        marker 1
        flood_client "$url" "$REQUESTS" || die "$name: flood requests not all served"
        marker 2
        kill -TERM "$vg_pid"
        wait "$vg_pid" 2>/dev/null || true
        vg_pid=""
        finish_config "$name" "$root"
        return
    fi
    marker 1
    local ab_out non2xx
    ab_out=$(ab $keepalive "${headers[@]}" -n "$REQUESTS" -c "$CONCURRENCY" -s 30 "$url" 2>&1) || die "$name: ab failed: $ab_out"
    grep -q '^Failed requests: *0$' <<<"$ab_out" || die "$name: failed requests: $ab_out"
    non2xx=$(sed -n 's/^Non-2xx responses: *\([0-9]*\).*/\1/p' <<<"$ab_out")
    if [ "$expect" != 200 ]; then
        [ "${non2xx:-0}" = "$REQUESTS" ] || die "$name: only ${non2xx:-0} of $REQUESTS refused"
    else
        [ -z "$non2xx" ] || die "$name: $non2xx non-2xx responses"
    fi
    marker 2
    kill -TERM "$vg_pid"
    wait "$vg_pid" 2>/dev/null || true
    vg_pid=""
    finish_config "$name" "$root"
}

# finish_config NAME ROOT: reads the window's dump; prints what hook_costs does.
finish_config() {
    local name=$1 root=$2
    local dump=$root/out/callgrind.out.2
    [ -e "$root/out/callgrind.out.3" ] && die "$name: more than two marker dumps (see $root/out)"
    [ -s "$dump" ] || die "$name: no callgrind dump $dump: $(tail -n 5 "$root/valgrind.log")"
    # Human-readable profile of the window, kept with KEEP=1.
    callgrind_annotate --inclusive=yes --threshold=99 "$dump" >"$root/annotate.txt" 2>/dev/null
    local costs
    costs=$(hook_costs "$dump")
    [ -n "$costs" ] || die "$name: could not read $dump"
    echo "$costs"
}

printf '%-13s %14s %14s %12s %14s' config "total Ir" "mod_shield Ir" "Ir/request" "shield Ir/req"
[ "$CACHE_SIM" = 1 ] && printf ' %12s %14s' "cycles/req" "shield cyc/req"
echo
declare -A per_req cyc_req
for name in $CONFIGS; do
    run_config "$name" >"$work/$name.result"
    read -r total shield total_cyc shield_cyc <"$work/$name.result"
    per_req[$name]=$(awk -v t="$total" -v n="$REQUESTS" 'BEGIN{printf "%.0f", t / n}')
    printf '%-13s %14s %14s %12s %14s' "$name" "$total" "$shield" "${per_req[$name]}" \
        "$(awk -v s="$shield" -v n="$REQUESTS" 'BEGIN{printf "%.0f", s / n}')"
    if [ -n "${total_cyc:-}" ]; then
        cyc_req[$name]=$(awk -v t="$total_cyc" -v n="$REQUESTS" 'BEGIN{printf "%.0f", t / n}')
        printf ' %12s %14s' "${cyc_req[$name]}" \
            "$(awk -v s="$shield_cyc" -v n="$REQUESTS" 'BEGIN{printf "%.0f", s / n}')"
    fi
    echo
    [ "$name" = shield ] && shield_total=$total shield_incl=$shield
done
echo
diff_line() { # diff_line LABEL A B
    [ -n "${per_req[$2]:-}" ] && [ -n "${per_req[$3]:-}" ] || return 0
    awk -v l="$1" -v a="${per_req[$2]}" -v b="${per_req[$3]}" \
        'BEGIN{printf "%-34s %+7d Ir/request (%+.2f %%)\n", l, a - b, 100 * (a - b) / b}'
    [ -n "${cyc_req[$2]:-}" ] && [ -n "${cyc_req[$3]:-}" ] || return 0
    awk -v l="$1" -v a="${cyc_req[$2]}" -v b="${cyc_req[$3]}" \
        'BEGIN{printf "%-34s %+7d est. cycles/request (%+.2f %%)\n", l, a - b, 100 * (a - b) / b}'
}
if [ -n "${shield_total:-}" ]; then
    awk -v s="$shield_incl" -v t="$shield_total" 'BEGIN{r = 100 * s / t;
        printf "mod_shield share of httpd instructions (patrol): %.2f %% (target <= 1 %%: %s)\n",
            r, (r <= 1) ? "met" : "missed"}'
fi
diff_line "shield vs bare (keep-alive)" shield bare
diff_line "evasive vs bare (keep-alive)" evasive bare
diff_line "shield vs evasive (keep-alive)" shield evasive
diff_line "blocked vs static-close (new conn.)" blocked static-close
diff_line "flood-shield vs flood-bare (new client)" flood flood-bare
diff_line "under-attack page vs bare static file" under-attack bare
diff_line "farm (lease) vs shield alone" farm shield
diff_line "farm-crawl (grant) vs shield alone" farm-crawl shield
