using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Nabla.Serving;

namespace Nabla.Cli;

/// <summary>The serve verb: the model server over a model repository folder.</summary>
static class ServeCommands
{
    public const string ServeHelp = """
        nabla serve --model-repository DIR: serve the ONNX models in DIR over the Open Inference Protocol (KServe v2).
        DIR/<model>/config.json (optional) describes a model; DIR/<model>/<version>/model.onnx holds each version.
        A version folder may hold a saved Nabla graph instead: model.nabla.json with model.safetensors beside it.
        REST (HTTP/1.1) and gRPC (HTTP/2, inference.GRPCInferenceService and grpc.health.v1) listen on 127.0.0.1 only.
        SIGTERM or Ctrl+C: readiness turns false, requests in flight finish, then the server exits.

        options:
          --model-repository DIR   the model repository (required)
          --http-port N            REST port (default 8000; 0 picks a free port)
          --grpc-port N            gRPC port (default 8001; 0 picks a free port)
          --max-request-mib N      largest request body / gRPC message in MiB (default 64)
          --drain-timeout S        seconds shutdown waits for requests in flight (default 30)
          --pre-stop-delay S       seconds to keep serving after SIGTERM with readiness false (default 0)
          --strict-readiness       ready only when every model loaded
          --model-control-mode M   none (default: load all at start; the load/unload API works) or poll
          --repository-poll-secs S seconds between repository polls in poll mode (default 15). A new version folder
                                   loads once complete: its model file present and readable, and either a '.ready'
                                   file beside it or unchanged (size, mtime) for one poll; it is warmed up before
                                   traffic moves to it, and the version it replaces drains, then is freed
          --api-key K              require 'X-API-Key: K' on the repository endpoints (index, load, unload)
          --auth-token T           require 'Authorization: Bearer T' there (default: env NABLA_SERVE_TOKEN)
          --auth-all               require the key or token on every endpoint but the health probes
          --tls-cert PATH          serve both ports over TLS with this certificate (.pfx/.p12, or .pem/.crt)
          --tls-key PATH           the private key of a PEM certificate, when it is in a separate file
          --tls-cert-password P    the .pfx password (or env NABLA_TLS_CERT_PASSWORD)
          --quiet                  log warnings and errors only
        """;

    public static int Serve(string[] argv)
    {
        var a = new Args(argv, new HashSet<string> { "--strict-readiness", "--quiet", "--auth-all" },
            new HashSet<string> { "--model-repository", "--http-port", "--grpc-port", "--max-request-mib", "--drain-timeout", "--pre-stop-delay",
                "--model-control-mode", "--repository-poll-secs", "--api-key", "--auth-token", "--tls-cert", "--tls-key", "--tls-cert-password" });
        var repo = a.Get("--model-repository") ?? throw new UsageException("--model-repository is required");
        if (!Directory.Exists(repo)) throw new UsageException($"model repository '{repo}' is not a folder");
        int Port(string name, int def)
        {
            int p = a.Int(name, def);
            return p is >= 0 and <= 65535 ? p : throw new UsageException($"{name} must be in [0, 65535], got {p}");
        }
        double drain = a.Double("--drain-timeout", 30), preStop = a.Double("--pre-stop-delay", 0);
        int mib = a.Int("--max-request-mib", 64);
        if (mib is < 1 or > 2047) throw new UsageException($"--max-request-mib must be in [1, 2047], got {mib}");
        if (drain < 0 || preStop < 0) throw new UsageException("--drain-timeout and --pre-stop-delay must not be negative");
        var mode = (a.Get("--model-control-mode") ?? "none").ToLowerInvariant() switch
        {
            "none" => ModelControlMode.None,
            "poll" => ModelControlMode.Poll,
            var m => throw new UsageException($"--model-control-mode must be none or poll, got '{m}'"),
        };
        double poll = a.Double("--repository-poll-secs", 15);
        if (poll <= 0) throw new UsageException("--repository-poll-secs must be positive");
        var apiKey = a.Get("--api-key");
        var token = a.Get("--auth-token");
        if (apiKey is "" || token is "") throw new UsageException("--api-key and --auth-token may not be empty");
        token ??= Environment.GetEnvironmentVariable("NABLA_SERVE_TOKEN") is { Length: > 0 } fromEnv ? fromEnv : null;
        if (a.Has("--auth-all") && apiKey is null && token is null)
            throw new UsageException("--auth-all needs --api-key, --auth-token or NABLA_SERVE_TOKEN");
        var options = new ServingOptions
        {
            ModelControlMode = mode,
            RepositoryPollInterval = TimeSpan.FromSeconds(poll),
            ApiKey = apiKey,
            AuthToken = token,
            AuthAll = a.Has("--auth-all"),
            TlsCertificatePath = a.Get("--tls-cert"),
            TlsKeyPath = a.Get("--tls-key"),
            TlsCertificatePassword = a.Get("--tls-cert-password") ?? Environment.GetEnvironmentVariable("NABLA_TLS_CERT_PASSWORD"),
            ModelRepository = repo,
            HttpPort = Port("--http-port", 8000),
            GrpcPort = Port("--grpc-port", 8001),
            MaxRequestBytes = (long)mib << 20,
            DrainTimeout = TimeSpan.FromSeconds(drain),
            PreStopDelay = TimeSpan.FromSeconds(preStop),
            StrictReadiness = a.Has("--strict-readiness"),
        };
        var app = NablaServing.BuildServer(options, a.Has("--quiet") ? LogLevel.Warning : LogLevel.Information);
        app.Start();
        var (http, grpc) = NablaServing.BoundPorts(app);
        // NOTE: one parseable line, so scripts and tests that pass port 0 learn the real ports.
        Console.WriteLine($"nabla serve: REST on http://127.0.0.1:{http}, gRPC on http://127.0.0.1:{grpc}");
        app.WaitForShutdown();
        return 0;
    }
}
