using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Nabla.Serving;

/// <summary>
/// Wiring for the model server. In a host of your own: <c>services.AddNablaServing(options)</c>, then
/// <c>app.UseNablaServing()</c> and <c>app.MapNablaServing()</c>. Standalone: <see cref="BuildServer"/> listens on
/// 127.0.0.1 with REST (HTTP/1.1) on <see cref="ServingOptions.HttpPort"/> and gRPC (HTTP/2 without TLS) on
/// <see cref="ServingOptions.GrpcPort"/>.
/// </summary>
public static class NablaServing
{
    public static IServiceCollection AddNablaServing(this IServiceCollection services, ServingOptions options)
    {
        services.AddSingleton(options);
        services.AddSingleton<ServerState>();
        services.AddSingleton(sp => new ModelRepository(options.ModelRepository, sp.GetService<ILoggerFactory>()?.CreateLogger("Nabla.Serving.ModelRepository"), options));
        services.AddSingleton<InferenceEngine>();
        services.AddHostedService<ServingLifecycle>();
        services.AddGrpc(o =>
        {
            o.MaxReceiveMessageSize = (int)Math.Min(options.MaxRequestBytes, int.MaxValue);
            o.MaxSendMessageSize = null;
            o.EnableDetailedErrors = false;
            o.Interceptors.Add<AuthInterceptor>();
        });
        services.Configure<HostOptions>(o => o.ShutdownTimeout = options.DrainTimeout);
        return services;
    }

    /// <summary>The REST authentication and error middleware (put them before routing).</summary>
    public static IApplicationBuilder UseNablaServing(this IApplicationBuilder app) => app.UseNablaAuth().UseNablaRestErrors();

    /// <summary>Maps the REST routes and the two gRPC services.</summary>
    public static IEndpointRouteBuilder MapNablaServing(this IEndpointRouteBuilder endpoints)
    {
        endpoints.MapNablaRest();
        endpoints.MapGrpcService<GrpcInferenceServiceImpl>();
        endpoints.MapGrpcService<GrpcHealthServiceImpl>();
        return endpoints;
    }

    /// <summary>A standalone server on loopback: REST on one port, gRPC on another. Call <c>RunAsync</c> (SIGTERM drains and exits).</summary>
    public static WebApplication BuildServer(ServingOptions options, LogLevel logLevel = LogLevel.Information)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [], ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
        builder.Logging.AddSimpleConsole(o => { o.SingleLine = true; o.TimestampFormat = "HH:mm:ss "; });
        builder.Logging.SetMinimumLevel(logLevel);
        builder.Logging.AddFilter("Microsoft.AspNetCore", logLevel > LogLevel.Warning ? logLevel : LogLevel.Warning);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = options.MaxRequestBytes;
            var cert = LoadCertificate(options);
            k.Listen(IPAddress.Loopback, options.HttpPort, l => { l.Protocols = HttpProtocols.Http1; if (cert is not null) l.UseHttps(cert); });
            k.Listen(IPAddress.Loopback, options.GrpcPort, l => { l.Protocols = HttpProtocols.Http2; if (cert is not null) l.UseHttps(cert); });
        });
        builder.Services.AddNablaServing(options);
        var app = builder.Build();
        // NOTE: the REST port speaks only HTTP/1.1 and the gRPC port only HTTP/2, so the protocol tells them apart.
        app.Use((ctx, next) =>
        {
            bool h2 = ctx.Request.Protocol == "HTTP/2";
            if (h2 != RestApi.IsGrpc(ctx))
            {
                ctx.Response.StatusCode = h2 ? 404 : 415;
                if (h2) return Task.CompletedTask;
                // A REST call (HTTP/1.1) with a gRPC content type: answer with the usual {"error"} body.
                var body = "{\"error\":\"content type application/grpc* is served only on the gRPC port\"}"u8.ToArray();
                ctx.Response.ContentType = "application/json";
                ctx.Response.ContentLength = body.Length;
                return ctx.Response.Body.WriteAsync(body, ctx.RequestAborted).AsTask();
            }
            return next(ctx);
        });
        app.UseNablaServing();
        app.MapNablaServing();
        return app;
    }

    static System.Security.Cryptography.X509Certificates.X509Certificate2? LoadCertificate(ServingOptions options)
    {
        var path = options.TlsCertificatePath;
        if (path is null) return null;
        if (!File.Exists(path)) throw new NablaException($"serve: TLS certificate not found: {path}");
        try
        {
            if (path.EndsWith(".pem", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".crt", StringComparison.OrdinalIgnoreCase))
                return System.Security.Cryptography.X509Certificates.X509Certificate2.CreateFromPemFile(path, options.TlsKeyPath);
            return System.Security.Cryptography.X509Certificates.X509CertificateLoader.LoadPkcs12FromFile(path, options.TlsCertificatePassword);
        }
        catch (System.Security.Cryptography.CryptographicException e)
        {
            throw new NablaException($"serve: TLS certificate {path} could not be loaded: {e.Message}");
        }
    }

    /// <summary>The actual (REST, gRPC) ports of a started <see cref="BuildServer"/> app, in listen order.</summary>
    public static (int Http, int Grpc) BoundPorts(WebApplication app)
    {
        var addresses = app.Services.GetRequiredService<IServer>().Features.GetRequiredFeature<IServerAddressesFeature>().Addresses.ToList();
        if (addresses.Count != 2) throw new InvalidOperationException($"expected two listeners, found {addresses.Count}");
        return (new Uri(addresses[0]).Port, new Uri(addresses[1]).Port);
    }
}

/// <summary>Loads the repository after the listeners are up, and runs the two-step drain on shutdown.</summary>
sealed class ServingLifecycle(ModelRepository repository, ServerState state, ServingOptions options, ILogger<ServingLifecycle> logger)
    : IHostedLifecycleService
{
    readonly CancellationTokenSource stopping = new();

    public Task StartingAsync(CancellationToken ct) => Task.CompletedTask;
    public Task StartAsync(CancellationToken ct) => Task.CompletedTask;

    public Task StartedAsync(CancellationToken ct)
    {
        _ = Task.Run(async () =>
        {
            string? failure = null;
            try { await repository.LoadAllAsync(stopping.Token).ConfigureAwait(false); }
            catch (OperationCanceledException) { return; }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                failure = $"model repository: {e.Message}";
                logger.LogError("{Failure}", failure);
            }
            if (failure is null && options.StrictReadiness && repository.Index(false).Any(r => r.State != ModelState.Ready))
                failure = "some models failed to load (strict readiness)";
            state.MarkLoaded(failure);
            logger.LogInformation("model repository {Root} loaded; server {Readiness}", repository.Root, state.Ready ? "ready" : "not ready: " + state.NotReadyReason);
            if (failure is null && options.ModelControlMode == ModelControlMode.Poll) await PollLoopAsync().ConfigureAwait(false);
        });
        return Task.CompletedTask;
    }

    async Task PollLoopAsync()
    {
        var interval = options.RepositoryPollInterval > TimeSpan.Zero ? options.RepositoryPollInterval : TimeSpan.FromSeconds(15);
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(interval, stopping.Token).ConfigureAwait(false);
                await repository.PollAsync(stopping.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) { return; }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                logger.LogWarning("repository poll failed: {Message}", e.Message);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // NOTE: a bug in one pass must not end polling for the life of the server.
                logger.LogError(e, "repository poll failed unexpectedly");
            }
        }
    }

    public async Task StoppingAsync(CancellationToken ct)
    {
        state.MarkStopping();
        await stopping.CancelAsync().ConfigureAwait(false);
        logger.LogInformation("shutting down: readiness is false; draining after {Delay} s", options.PreStopDelay.TotalSeconds);
        if (options.PreStopDelay > TimeSpan.Zero)
        {
            try { await Task.Delay(options.PreStopDelay, ct).ConfigureAwait(false); }
            catch (OperationCanceledException) { }
        }
        state.MarkDraining();
    }

    public Task StopAsync(CancellationToken ct) => Task.CompletedTask;
    public Task StoppedAsync(CancellationToken ct)
    {
        repository.RetireAll();
        return Task.CompletedTask;
    }
}
