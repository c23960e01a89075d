# jobqd in a container. Built on debian:12 with the Makefile's BUILD_PACKAGES; run on
# debian:12-slim with only what the binaries link against, redis-server (for the built-in
# config's embedded Redis), tini and CA certificates. tests/integration/test_packaging.cpp lints
# this file and checks both package lists against the Makefile and the binaries, and computes
# the build context .dockerignore leaves (the sources, a few hundred KB).
# Cron schedules' time zones are read from tzdata's /usr/share/zoneinfo by libdate-tz3: tzdata
# is in debian:12-slim already (priority required in Debian 12), and libdate-tz3 depends on it.
#
#   make image      # docker build --build-arg JOBQD_VERSION="$(make -s version)" -t jobqd .
#   docker run -d --name jobqd -v jobqd-state:/var/lib/jobqd jobqd
#   docker exec jobqd jobqctl submit default '{"n": 1}' --wait
#   docker run -v $PWD/jobqd.yaml:/etc/jobqd/jobqd.yaml:ro jobqd    # your own config
#   docker kill -s HUP jobqd                                       # reload it

FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      g++ make pkg-config libevent-dev libhiredis-dev libyaml-cpp-dev libssl-dev \
      nlohmann-json3-dev libspdlog-dev libfmt-dev libsystemd-dev libcli11-dev \
      libhowardhinnant-date-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The context has no .git (.dockerignore), so `git describe` cannot say the version: the build
# is given it (`make image` passes it).
ARG JOBQD_VERSION=unknown
# deps is satisfied already (NO_DEPS): the build stage has exactly BUILD_PACKAGES.
RUN make -j"$(nproc)" NO_DEPS=1 JOBQD_VERSION="$JOBQD_VERSION" build/jobqd build/jobqctl

FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libevent-2.1-7 libevent-openssl-2.1-7 libfmt9 libhiredis0.14 libspdlog1.10 libssl3 \
      libstdc++6 libsystemd0 libyaml-cpp0.7 libdate-tz3 redis-server tini ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --user-group --home-dir /var/lib/jobqd --shell /usr/sbin/nologin jobqd \
 && install -d -o jobqd -g jobqd -m 0700 /var/lib/jobqd \
 && install -d -o jobqd -g jobqd -m 0750 /var/spool/jobqd
COPY --from=build /src/build/jobqd /src/build/jobqctl /usr/local/bin/
COPY config/docker.yaml /etc/jobqd/jobqd.yaml
COPY docs/ /usr/local/share/doc/jobqd/docs/
USER jobqd
VOLUME ["/var/lib/jobqd"]
# tini as PID 1: it passes SIGTERM/SIGINT/SIGHUP to jobqd and reaps orphans of exec handlers.
# jobqd stops gracefully within daemon.shutdown_grace (25s): run with --stop-timeout 40.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/jobqd"]
CMD ["-c", "/etc/jobqd/jobqd.yaml"]
STOPSIGNAL SIGTERM
# 200 from /healthz once serving; needs http.listen on 127.0.0.1:9464 (the built-in config's).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9464 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && read -r _ code _ <&3 && [ \"$code\" = 200 ]"]
