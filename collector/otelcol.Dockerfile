# otelcol-chatai for docker-compose.yml: built from collector/builder-config.yaml
# with the same steps as `./dev build` (tools/binaries.py), so what runs in compose is what the
# tests ran. Build context: the repository root.
FROM golang:1.26.8-bookworm AS build
ARG OCB_VERSION=0.158.0
RUN go install go.opentelemetry.io/collector/cmd/builder@v${OCB_VERSION}
WORKDIR /src
COPY collector/builder-config.yaml ./
# ocb only generates the sources; go get + go mod tidy resolve the modules and go build
# compiles (ocb's own `go mod download` also fetches windows-only modules: see tools/binaries.py)
RUN sed -i 's|output_path:.*|output_path: /src/build|' builder-config.yaml \
 && builder --config builder-config.yaml --skip-get-modules --skip-compilation \
 && cd build \
 && go mod init otelcol-chatai \
 && go get $(sed -n 's/^ *- gomod: \([^ ]*\) \([^ ]*\)$/\1@\2/p' ../builder-config.yaml) \
      go.opentelemetry.io/collector/otelcol@v${OCB_VERSION} \
 && go mod tidy \
 && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /otelcol-chatai .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /otelcol-chatai /otelcol-chatai
EXPOSE 4317 4318 13133 8888 8889
ENTRYPOINT ["/otelcol-chatai"]
CMD ["--config=/etc/otelcol-chatai/config.yaml"]
