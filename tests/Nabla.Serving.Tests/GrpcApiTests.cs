using System.Runtime.InteropServices;
using Google.Protobuf;
using Grpc.Core;
using Nabla.Serving.Grpc;
using Nabla.Serving.Health;
using Xunit;

namespace Nabla.Serving.Tests;

/// <summary>inference.GRPCInferenceService and grpc.health.v1 over h2c with a Grpc.Net.Client client generated from the project's .proto.</summary>
public sealed class GrpcApiTests(ServerFixture server) : IClassFixture<ServerFixture>
{
    GRPCInferenceService.GRPCInferenceServiceClient Client => new(server.Channel);

    static ModelInferRequest MnistRequest(bool raw, string model = "mnist")
    {
        var input = new ModelInferRequest.Types.InferInputTensor { Name = "Input3", Datatype = "FP32", Shape = { 1, 1, 28, 28 } };
        var req = new ModelInferRequest { ModelName = model, Id = "grpc-1", Inputs = { input } };
        if (raw) req.RawInputContents.Add(ByteString.CopyFrom(MemoryMarshal.AsBytes(Mnist.Input.AsSpan())));
        else input.Contents = new InferTensorContents { Fp32Contents = { Mnist.Input } };
        return req;
    }

    static float[] Output(ModelInferResponse r, int i = 0) => MemoryMarshal.Cast<byte, float>(r.RawOutputContents[i].Span).ToArray();

    [Fact]
    public async Task LiveReadyAndMetadata()
    {
        Assert.True((await Client.ServerLiveAsync(new ServerLiveRequest())).Live);
        Assert.True((await Client.ServerReadyAsync(new ServerReadyRequest())).Ready);
        var meta = await Client.ServerMetadataAsync(new ServerMetadataRequest());
        Assert.Equal("nabla", meta.Name);
        Assert.Contains("model_repository", meta.Extensions);
        Assert.True((await Client.ModelReadyAsync(new ModelReadyRequest { Name = "mnist" })).Ready);
        Assert.False((await Client.ModelReadyAsync(new ModelReadyRequest { Name = "mnist_versions", Version = "2" })).Ready);
        var mm = await Client.ModelMetadataAsync(new ModelMetadataRequest { Name = "mnist" });
        Assert.Equal("nabla_onnx", mm.Platform);
        Assert.Equal(["1"], mm.Versions);
        Assert.Equal("Input3", mm.Inputs[0].Name);
        Assert.Equal([1L, 1, 28, 28], mm.Inputs[0].Shape);
        Assert.Equal("Plus214_Output_0", mm.Outputs[0].Name);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task InferMatchesTheReferenceOutput(bool raw)
    {
        var r = await Client.ModelInferAsync(MnistRequest(raw));
        Assert.Equal("mnist", r.ModelName);
        Assert.Equal("1", r.ModelVersion);
        Assert.Equal("grpc-1", r.Id);
        Assert.Equal("Plus214_Output_0", r.Outputs[0].Name);
        Assert.Equal("FP32", r.Outputs[0].Datatype);
        Assert.Equal([1L, 10], r.Outputs[0].Shape);
        Mnist.AssertClose(Mnist.Expected, Output(r));
    }

    static async Task<RpcException> Fails(Func<Task> call)
    {
        return await Assert.ThrowsAsync<RpcException>(call);
    }

    [Fact]
    public async Task ErrorsMapToStatusCodes()
    {
        var unknown = await Fails(async () => await Client.ModelInferAsync(MnistRequest(true, model: "nope")));
        Assert.Equal(StatusCode.NotFound, unknown.StatusCode);

        var badShape = MnistRequest(true);
        badShape.Inputs[0].Shape[1] = 2;
        Assert.Equal(StatusCode.InvalidArgument, (await Fails(async () => await Client.ModelInferAsync(badShape))).StatusCode);

        var badType = MnistRequest(true);
        badType.Inputs[0].Datatype = "INT64";
        Assert.Equal(StatusCode.InvalidArgument, (await Fails(async () => await Client.ModelInferAsync(badType))).StatusCode);

        var shortRaw = MnistRequest(true);
        shortRaw.RawInputContents[0] = ByteString.CopyFrom(new byte[10]);
        var e = await Fails(async () => await Client.ModelInferAsync(shortRaw));
        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        Assert.Contains("bytes", e.Status.Detail);

        var mixed = MnistRequest(true);
        mixed.Inputs[0].Contents = new InferTensorContents { Fp32Contents = { 1f } };
        Assert.Equal(StatusCode.InvalidArgument, (await Fails(async () => await Client.ModelInferAsync(mixed))).StatusCode);

        var wrongField = MnistRequest(false);
        wrongField.Inputs[0].Contents = new InferTensorContents { Int64Contents = { Enumerable.Repeat(0L, 784) } };
        Assert.Equal(StatusCode.InvalidArgument, (await Fails(async () => await Client.ModelInferAsync(wrongField))).StatusCode);

        var broken = await Fails(async () => await Client.ModelInferAsync(MnistRequest(true, model: "broken_config")));
        Assert.Equal(StatusCode.Unavailable, broken.StatusCode);

        Assert.Equal(StatusCode.NotFound, (await Fails(async () => await Client.ModelMetadataAsync(new ModelMetadataRequest { Name = "nope" }))).StatusCode);
        Assert.Equal(StatusCode.NotFound, (await Fails(async () => await Client.ModelReadyAsync(new ModelReadyRequest { Name = "mnist", Version = "7" }))).StatusCode);
        Assert.Equal(StatusCode.NotFound, (await Fails(async () => await Client.RepositoryModelLoadAsync(new RepositoryModelLoadRequest { ModelName = "not_there" }))).StatusCode);
    }

    [Fact]
    public async Task MessageOverTheLimitIsResourceExhausted()
    {
        var big = MnistRequest(true);
        big.RawInputContents[0] = ByteString.CopyFrom(new byte[ServerFixture.BodyLimit + 16]);
        Assert.Equal(StatusCode.ResourceExhausted, (await Fails(async () => await Client.ModelInferAsync(big))).StatusCode);
    }

    [Fact]
    public async Task RepositoryIndex()
    {
        var index = await Client.RepositoryIndexAsync(new RepositoryIndexRequest());
        Assert.Contains(index.Models, m => m is { Name: "mnist", Version: "1", State: "READY" });
        var v2 = Assert.Single(index.Models, m => m.Name == "mnist_versions" && m.Version == "2");
        Assert.Equal("UNAVAILABLE", v2.State);
        Assert.NotEmpty(v2.Reason);
        var ready = await Client.RepositoryIndexAsync(new RepositoryIndexRequest { Ready = true });
        Assert.All(ready.Models, m => Assert.Equal("READY", m.State));
    }

    [Fact]
    public async Task HealthCheck()
    {
        var health = new Health.Health.HealthClient(server.Channel);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, (await health.CheckAsync(new HealthCheckRequest())).Status);
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, (await health.CheckAsync(new HealthCheckRequest { Service = "inference.GRPCInferenceService" })).Status);
        var e = await Fails(async () => await health.CheckAsync(new HealthCheckRequest { Service = "other" }));
        Assert.Equal(StatusCode.NotFound, e.StatusCode);
        using var watch = health.Watch(new HealthCheckRequest(), cancellationToken: new CancellationTokenSource(TimeSpan.FromSeconds(10)).Token);
        Assert.True(await watch.ResponseStream.MoveNext(CancellationToken.None));
        Assert.Equal(HealthCheckResponse.Types.ServingStatus.Serving, watch.ResponseStream.Current.Status);
    }
}
