using System.Net;
using Grpc.Core;
using Nabla.Serving.Grpc;
using Nabla.Serving.Health;
using Xunit;

namespace Nabla.Serving.Tests;

public class AuthFixture : ServerFixture
{
    public const string Key = "key-0123456789", Token = "token-abcdef";

    protected override void Configure(ServingOptions options)
    {
        options.ApiKey = Key;
        options.AuthToken = Token;
    }
}

public sealed class AuthAllFixture : AuthFixture
{
    protected override void Configure(ServingOptions options)
    {
        base.Configure(options);
        options.AuthAll = true;
    }
}

static class AuthHelpers
{
    public static async Task<HttpResponseMessage> Send(HttpClient http, HttpMethod method, string path, string? bearer = null, string? key = null)
    {
        var req = new HttpRequestMessage(method, path);
        if (method == HttpMethod.Post) req.Content = new StringContent(path.EndsWith("/infer", StringComparison.Ordinal) ? Mnist.InferJson() : "{}", System.Text.Encoding.UTF8, "application/json");
        if (bearer is not null) req.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", bearer);
        if (key is not null) req.Headers.Add(ServingAuth.ApiKeyHeader, key);
        return await http.SendAsync(req);
    }

    public static async Task AssertUnauthorized(HttpResponseMessage r)
    {
        Assert.Equal(HttpStatusCode.Unauthorized, r.StatusCode);
        Assert.Contains(r.Headers.WwwAuthenticate, h => h.Scheme == "Bearer");
        Assert.Contains("authentication required", await r.Content.ReadAsStringAsync());
    }
}

/// <summary>A key and a token set, without --auth-all: only the repository endpoints need them.</summary>
public sealed class AuthTests(AuthFixture server) : IClassFixture<AuthFixture>
{
    [Fact]
    public async Task RepositoryEndpointsNeedACredentialOverRest()
    {
        var http = server.Http;
        await AuthHelpers.AssertUnauthorized(await AuthHelpers.Send(http, HttpMethod.Post, "/v2/repository/index"));
        await AuthHelpers.AssertUnauthorized(await AuthHelpers.Send(http, HttpMethod.Post, "/v2/repository/models/mnist/unload"));
        await AuthHelpers.AssertUnauthorized(await AuthHelpers.Send(http, HttpMethod.Post, "/v2/repository/models/mnist/load"));
        await AuthHelpers.AssertUnauthorized(await AuthHelpers.Send(http, HttpMethod.Post, "/v2/repository/index", bearer: "token-abcdeX"));
        await AuthHelpers.AssertUnauthorized(await AuthHelpers.Send(http, HttpMethod.Post, "/v2/repository/index", bearer: AuthFixture.Key));
        await AuthHelpers.AssertUnauthorized(await AuthHelpers.Send(http, HttpMethod.Post, "/v2/repository/index", key: AuthFixture.Token));
        await AuthHelpers.AssertUnauthorized(await AuthHelpers.Send(http, HttpMethod.Post, "/v2/repository/index", key: ""));
        // Other spellings of the same route.
        await AuthHelpers.AssertUnauthorized(await AuthHelpers.Send(http, HttpMethod.Post, "/V2/REPOSITORY/INDEX"));
        await AuthHelpers.AssertUnauthorized(await AuthHelpers.Send(http, HttpMethod.Post, "/v2//repository/index"));
        await AuthHelpers.AssertUnauthorized(await AuthHelpers.Send(http, HttpMethod.Post, "/v2/%72epository/index"));
        Assert.Equal(HttpStatusCode.OK, (await AuthHelpers.Send(http, HttpMethod.Post, "/v2/repository/index", bearer: AuthFixture.Token)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await AuthHelpers.Send(http, HttpMethod.Post, "/v2/repository/index", key: AuthFixture.Key)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await AuthHelpers.Send(http, HttpMethod.Post, "/v2/repository/models/mnist_reload/load", key: AuthFixture.Key)).StatusCode);
        // Inference, metadata, health and metrics stay open.
        Assert.Equal(HttpStatusCode.OK, (await AuthHelpers.Send(http, HttpMethod.Post, "/v2/models/mnist/infer")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await AuthHelpers.Send(http, HttpMethod.Get, "/v2/models/mnist")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await AuthHelpers.Send(http, HttpMethod.Get, "/v2/health/ready")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await AuthHelpers.Send(http, HttpMethod.Get, "/metrics")).StatusCode);
    }

    [Fact]
    public async Task RepositoryRpcsNeedACredentialOverGrpc()
    {
        var client = new GRPCInferenceService.GRPCInferenceServiceClient(server.Channel);
        var e = await Assert.ThrowsAsync<RpcException>(async () => await client.RepositoryIndexAsync(new RepositoryIndexRequest()));
        Assert.Equal(StatusCode.Unauthenticated, e.StatusCode);
        e = await Assert.ThrowsAsync<RpcException>(async () => await client.RepositoryModelUnloadAsync(new RepositoryModelUnloadRequest { ModelName = "mnist" },
            new Metadata { { "authorization", "Bearer wrong" } }));
        Assert.Equal(StatusCode.Unauthenticated, e.StatusCode);
        Assert.NotEmpty((await client.RepositoryIndexAsync(new RepositoryIndexRequest(), new Metadata { { "authorization", "Bearer " + AuthFixture.Token } })).Models);
        Assert.NotEmpty((await client.RepositoryIndexAsync(new RepositoryIndexRequest(), new Metadata { { "x-api-key", AuthFixture.Key } })).Models);
        Assert.True((await client.ModelReadyAsync(new ModelReadyRequest { Name = "mnist" })).Ready);
    }
}

/// <summary>--auth-all: every endpoint but the health probes needs the credential.</summary>
public sealed class AuthAllTests(AuthAllFixture server) : IClassFixture<AuthAllFixture>
{
    [Fact]
    public async Task EveryEndpointButHealthNeedsACredential()
    {
        var http = server.Http;
        await AuthHelpers.AssertUnauthorized(await AuthHelpers.Send(http, HttpMethod.Post, "/v2/models/mnist/infer"));
        await AuthHelpers.AssertUnauthorized(await AuthHelpers.Send(http, HttpMethod.Get, "/v2"));
        await AuthHelpers.AssertUnauthorized(await AuthHelpers.Send(http, HttpMethod.Get, "/metrics"));
        await AuthHelpers.AssertUnauthorized(await AuthHelpers.Send(http, HttpMethod.Get, "/v2/models/mnist/stats"));
        Assert.Equal(HttpStatusCode.OK, (await AuthHelpers.Send(http, HttpMethod.Get, "/v2/health/live")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await AuthHelpers.Send(http, HttpMethod.Get, "/v2/health/ready")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await AuthHelpers.Send(http, HttpMethod.Post, "/v2/models/mnist/infer", bearer: AuthFixture.Token)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await AuthHelpers.Send(http, HttpMethod.Get, "/metrics", key: AuthFixture.Key)).StatusCode);
    }

    [Fact]
    public async Task GrpcCallsNeedACredentialButHealthDoesNot()
    {
        var client = new GRPCInferenceService.GRPCInferenceServiceClient(server.Channel);
        var e = await Assert.ThrowsAsync<RpcException>(async () => await client.ServerMetadataAsync(new ServerMetadataRequest()));
        Assert.Equal(StatusCode.Unauthenticated, e.StatusCode);
        e = await Assert.ThrowsAsync<RpcException>(async () => await client.ModelReadyAsync(new ModelReadyRequest { Name = "mnist" }));
        Assert.Equal(StatusCode.Unauthenticated, e.StatusCode);
        Assert.True((await client.ModelReadyAsync(new ModelReadyRequest { Name = "mnist" }, new Metadata { { "authorization", "Bearer " + AuthFixture.Token } })).Ready);
        var health = new Health.Health.HealthClient(server.Channel);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, (await health.CheckAsync(new HealthCheckRequest())).Status);
    }
}
