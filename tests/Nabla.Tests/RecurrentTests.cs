using Nabla.NN;
using Xunit;

namespace Nabla.Tests;

/// <summary>LSTM, GRU and their cells against PyTorch (tools/fixtures/make_module_fixtures.py).</summary>
public sealed class RecurrentTests
{
    static Dictionary<string, Tensor?> RunLstm(LSTM m, Dictionary<string, Tensor> x)
    {
        var (output, (h, c)) = m.Forward(x["x"], x.ContainsKey("h0") ? (x["h0"], x["c0"]) : null);
        return new() { ["output"] = output, ["h_n"] = h, ["c_n"] = c };
    }

    static Dictionary<string, Tensor?> RunGru(GRU m, Dictionary<string, Tensor> x)
    {
        var (output, h) = m.Forward(x["x"], x.GetValueOrDefault("h0"));
        return new() { ["output"] = output, ["h_n"] = h };
    }

    [Fact]
    public void Lstm2LayerBidirectionalBatchFirstMatchesPyTorch()
    {
        var m = new LSTM(5, 4, numLayers: 2, batchFirst: true, bidirectional: true);
        ModuleFixture.Check("lstm_2layer_bidir_batchfirst", m, x => RunLstm(m, x));
    }

    [Fact]
    public void Lstm1LayerWithoutInitialStateMatchesPyTorch()
    {
        var m = new LSTM(3, 6);
        ModuleFixture.Check("lstm_1layer_nostate", m, x => RunLstm(m, x));
    }

    [Fact]
    public void Gru2LayerBidirectionalMatchesPyTorch()
    {
        var m = new GRU(5, 4, numLayers: 2, bidirectional: true);
        ModuleFixture.Check("gru_2layer_bidir", m, x => RunGru(m, x));
    }

    [Fact]
    public void GruWithoutBiasBatchFirstMatchesPyTorch()
    {
        var m = new GRU(3, 5, bias: false, batchFirst: true);
        ModuleFixture.Check("gru_1layer_nobias_batchfirst", m, x => RunGru(m, x));
    }

    [Fact]
    public void LstmCellMatchesPyTorch()
    {
        var m = new LSTMCell(4, 5);
        ModuleFixture.Check("lstmcell", m, x =>
        {
            var (h, c) = m.Forward(x["x"], (x["h0"], x["c0"]));
            return new() { ["h"] = h, ["c"] = c };
        });
    }

    [Fact]
    public void GruCellMatchesPyTorch()
    {
        var m = new GRUCell(4, 5);
        ModuleFixture.Check("grucell", m, x => new() { ["h"] = m.Forward(x["x"], x["h0"]) });
    }

    [Fact]
    public void ShapesFollowPyTorch()
    {
        var lstm = new LSTM(3, 4, numLayers: 3, bidirectional: true, batchFirst: true);
        var (o, (h, c)) = lstm.Forward(Tensor.Randn([2, 7, 3]), null);
        Assert.Equal([2, 7, 8], o.Shape);
        Assert.Equal([6, 2, 4], h.Shape);
        Assert.Equal([6, 2, 4], c.Shape);
        var gru = new GRU(3, 4, numLayers: 2);
        var (go, gh) = gru.Forward(Tensor.Randn([7, 3]), null);   // unbatched
        Assert.Equal([7, 4], go.Shape);
        Assert.Equal([2, 4], gh.Shape);
        Assert.Throws<ShapeMismatchException>(() => gru.Forward(Tensor.Randn([7, 2, 5]), null));
        Assert.Throws<ShapeMismatchException>(() => gru.Forward(Tensor.Randn([7, 2, 3]), Tensor.Zeros([1, 2, 4])));
    }

    [Fact]
    public void DropoutBetweenLayersOnlyInTraining()
    {
        var m = new LSTM(3, 4, numLayers: 2, dropout: 0.5);
        var x = Tensor.Randn([5, 2, 3]);
        m.Eval();
        var a = m.Forward(x).ToDoubleArray();
        var b = m.Forward(x).ToDoubleArray();
        Assert.Equal(a, b);
        m.Train();
        Assert.NotEqual(a, m.Forward(x).ToDoubleArray());
    }
}
