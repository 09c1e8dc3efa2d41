using System.Security.Cryptography;
using System.Text;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;

namespace Nabla.Serving;

/// <summary>
/// API-key and bearer-token checks for both transports. A credential matches when the <c>X-API-Key</c> header equals
/// <see cref="ServingOptions.ApiKey"/> or <c>Authorization: Bearer &lt;t&gt;</c> carries <see cref="ServingOptions.AuthToken"/>;
/// comparison hashes both sides with SHA-256 and compares the digests in constant time, so neither the content nor the
/// length of a secret leaks through timing.
/// </summary>
public static class ServingAuth
{
    public const string ApiKeyHeader = "X-API-Key";
    public const string Challenge = "Bearer realm=\"nabla\"";

    internal static bool Enabled(ServingOptions o) => !string.IsNullOrEmpty(o.ApiKey) || !string.IsNullOrEmpty(o.AuthToken);

    /// <summary>
    /// Whether a REST request needs a credential under <paramref name="o"/>. Both the path (with repeated slashes
    /// collapsed) and the matched route pattern are checked, so no spelling of a protected route slips through.
    /// </summary>
    internal static bool RestPathProtected(ServingOptions o, HttpContext ctx)
    {
        if (!Enabled(o)) return false;
        var path = CollapseSlashes(ctx.Request.Path.Value ?? "");
        var pattern = (ctx.GetEndpoint() as Microsoft.AspNetCore.Routing.RouteEndpoint)?.RoutePattern.RawText;
        if (path.StartsWith("/v2/repository", StringComparison.OrdinalIgnoreCase)
            || pattern?.StartsWith("/v2/repository", StringComparison.OrdinalIgnoreCase) == true) return true;
        if (!o.AuthAll) return false;
        return !(pattern ?? path).StartsWith("/v2/health/", StringComparison.OrdinalIgnoreCase);
    }

    static string CollapseSlashes(string path)
    {
        if (!path.Contains("//", StringComparison.Ordinal)) return path;
        var sb = new StringBuilder(path.Length);
        foreach (var c in path)
            if (c != '/' || sb.Length == 0 || sb[^1] != '/') sb.Append(c);
        return sb.ToString();
    }

    /// <summary>Whether a gRPC method (full path) needs a credential under <paramref name="o"/>.</summary>
    internal static bool GrpcMethodProtected(ServingOptions o, string method)
    {
        if (!Enabled(o)) return false;
        if (method.StartsWith("/inference.GRPCInferenceService/Repository", StringComparison.Ordinal)) return true;
        return o.AuthAll && !method.StartsWith("/grpc.health.v1.Health/", StringComparison.Ordinal);
    }

    /// <summary>Checks presented credentials (either may be null) in constant time.</summary>
    internal static bool Authorized(ServingOptions o, string? apiKey, string? authorization)
    {
        bool ok = false;
        if (!string.IsNullOrEmpty(o.ApiKey)) ok |= FixedEquals(apiKey ?? "", o.ApiKey);
        if (!string.IsNullOrEmpty(o.AuthToken))
        {
            var presented = authorization is not null && authorization.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase)
                ? authorization["Bearer ".Length..].Trim() : "";
            ok |= FixedEquals(presented, o.AuthToken);
        }
        return ok;
    }

    static bool FixedEquals(string presented, string secret)
    {
        // NOTE: digests have a fixed length, so FixedTimeEquals never returns early on a length difference.
        var a = SHA256.HashData(Encoding.UTF8.GetBytes(presented));
        var b = SHA256.HashData(Encoding.UTF8.GetBytes(secret));
        return CryptographicOperations.FixedTimeEquals(a, b) & presented.Length > 0;
    }

    /// <summary>REST middleware: 401 with <c>WWW-Authenticate</c> and <c>{"error"}</c> for a protected path without a valid credential.</summary>
    public static IApplicationBuilder UseNablaAuth(this IApplicationBuilder app) => app.Use(async (ctx, next) =>
    {
        var o = ctx.RequestServices.GetRequiredService<ServingOptions>();
        if (!RestApi.IsGrpc(ctx) && RestPathProtected(o, ctx)
            && !Authorized(o, ctx.Request.Headers[ApiKeyHeader].FirstOrDefault(), ctx.Request.Headers.Authorization.FirstOrDefault()))
        {
            ctx.Response.StatusCode = StatusCodes.Status401Unauthorized;
            ctx.Response.Headers.WWWAuthenticate = Challenge;
            var body = "{\"error\":\"authentication required: send 'Authorization: Bearer <token>' or 'X-API-Key: <key>'\"}"u8.ToArray();
            ctx.Response.ContentType = "application/json";
            ctx.Response.ContentLength = body.Length;
            await ctx.Response.Body.WriteAsync(body, ctx.RequestAborted);
            return;
        }
        await next(ctx);
    });
}

/// <summary>gRPC side of <see cref="ServingAuth"/>: UNAUTHENTICATED for a protected method without a valid credential.</summary>
sealed class AuthInterceptor(ServingOptions options) : Interceptor
{
    void Check(ServerCallContext context)
    {
        if (!ServingAuth.GrpcMethodProtected(options, context.Method)) return;
        var headers = context.RequestHeaders;
        if (!ServingAuth.Authorized(options, headers.GetValue("x-api-key"), headers.GetValue("authorization")))
            throw new RpcException(new Status(StatusCode.Unauthenticated, "authentication required: send metadata 'authorization: Bearer <token>' or 'x-api-key: <key>'"));
    }

    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        Check(context);
        return continuation(request, context);
    }

    public override Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        Check(context);
        return continuation(request, responseStream, context);
    }
}
