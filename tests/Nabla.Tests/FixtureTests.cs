using System.Collections.Concurrent;
using System.Globalization;
using Nabla.IO;
using Xunit;

namespace Nabla.Tests;

/// <summary>
/// Golden fixtures from real PyTorch (tools/fixtures/make_core_fixtures.py, torch 1.13). Each case runs the
/// same op in Nabla twice: in float32 (forward against PyTorch's float32 output, gradients against PyTorch's
/// float64 gradients with float32 tolerances) and in float64 (forward and gradients at float64 tolerances).
/// </summary>
public sealed class FixtureTests
{
    // |nabla - torch| <= Atol + Rtol * |torch|, elementwise.
    const double Rtol32 = 1e-4, Atol32 = 1e-5;
    const double Rtol64 = 1e-9, Atol64 = 1e-11;

    static readonly string[] Families = ["unary", "binary", "reduce", "matmul", "conv", "norm", "softmax_loss", "index", "views", "edges"];

    static string FixturePath(string family) => Path.Combine(AppContext.BaseDirectory, "fixtures", "core", family + ".safetensors");

    static readonly ConcurrentDictionary<string, (Dictionary<string, Tensor> Tensors, Dictionary<string, string> Metadata)> Cache = new();

    static (Dictionary<string, Tensor> Tensors, Dictionary<string, string> Metadata) Load(string family) =>
        Cache.GetOrAdd(family, f => SafeTensors.LoadWithMetadata(FixturePath(f)));

    static string[] CaseNames(string family) => Load(family).Metadata["cases"].Split(',');

    public static IEnumerable<object[]> Cases() =>
        Families.Where(f => File.Exists(FixturePath(f))).SelectMany(f => CaseNames(f).Select(c => new object[] { f, c }));

    static Tensor T(Tensor x) => x.Transpose(0, 1);

    static readonly (int, int) One = (1, 1);

    /// <summary>Each op exactly as the Python script writes it, keyed "family/case".</summary>
    static readonly Dictionary<string, Func<Tensor[], Tensor>> Ops = BuildOps();

    static Dictionary<string, Func<Tensor[], Tensor>> BuildOps()
    {
        var ops = new Dictionary<string, Func<Tensor[], Tensor>>();

        // ---------------- unary ----------------
        var unary = new Dictionary<string, Func<Tensor, Tensor>>
        {
            ["neg"] = x => x.Neg(),
            ["exp"] = x => x.Exp(),
            ["log"] = x => x.Log(),
            ["log1p"] = x => x.Log1p(),
            ["expm1"] = x => x.Expm1(),
            ["sqrt"] = x => x.Sqrt(),
            ["rsqrt"] = x => x.Rsqrt(),
            ["reciprocal"] = x => x.Reciprocal(),
            ["square"] = x => x.Square(),
            ["abs"] = x => x.Abs(),
            ["sin"] = x => x.Sin(),
            ["cos"] = x => x.Cos(),
            ["tanh"] = x => x.Tanh(),
            ["sigmoid"] = x => x.Sigmoid(),
            ["relu"] = x => x.Relu(),
            ["leaky_relu"] = x => x.LeakyRelu(0.1),
            ["elu"] = x => x.Elu(1.3),
            ["gelu"] = x => x.Gelu(),
            ["gelu_tanh"] = x => x.Gelu("tanh"),
            ["silu"] = x => x.Silu(),
            ["softplus"] = x => x.Softplus(),
            ["softplus_beta_threshold"] = x => x.Softplus(beta: 2.0, threshold: 1.0),
            ["erf"] = x => x.Erf(),
            ["clamp"] = x => x.Clamp(-0.5, 0.7),
            ["clamp_min"] = x => x.Clamp(min: -0.2),
            ["hardtanh"] = x => x.Hardtanh(),
            ["pow_3"] = x => x.Pow(3),
            ["pow_half"] = x => x.Pow(0.5),
            ["pow_neg"] = x => x.Pow(-1.5),
        };
        foreach (var (name, f) in unary)
        {
            ops["unary/" + name] = x => f(x[0]);
            ops["unary/" + name + "_t"] = x => f(T(x[0]));
        }

        // ---------------- binary ----------------
        var binary = new Dictionary<string, Func<Tensor, Tensor, Tensor>>
        {
            ["add"] = (a, b) => a.Add(b),
            ["sub"] = (a, b) => a.Sub(b),
            ["mul"] = (a, b) => a.Mul(b),
            ["div"] = (a, b) => a.Div(b),
            ["pow"] = (a, b) => a.Pow(b),
            ["maximum"] = (a, b) => a.Maximum(b),
            ["minimum"] = (a, b) => a.Minimum(b),
        };
        foreach (var (name, f) in binary)
        {
            foreach (var s in new[] { "same", "row_col", "trailing", "leading", "scalar", "mid" })
                ops[$"binary/{name}_{s}"] = x => f(x[0], x[1]);
            ops[$"binary/{name}_t"] = x => f(T(x[0]), x[1]);
        }
        ops["binary/add_alpha"] = x => x[0].Add(x[1], -2.5);
        ops["binary/scalar_ops"] = x => (2.0 - x[0]) * 1.5 / 4.0 + 0.25;
        ops["binary/rdiv"] = x => 3.0 / x[0];
        ops["binary/where"] = x => Tensor.Where(x[0], x[1], x[2]);
        ops["binary/where_bcast"] = x => Tensor.Where(x[0], x[1], x[2]);
        ops["binary/masked_fill"] = x => x[0].MaskedFill(x[1], -1.5);
        ops["binary/self_mul"] = x => x[0] * x[0] + x[0];

        // ---------------- reductions ----------------
        ops["reduce/sum_all"] = x => x[0].Sum();
        ops["reduce/sum_dim"] = x => x[0].Sum(1);
        ops["reduce/sum_dims_keep"] = x => x[0].Sum([0, 2], keepDim: true);
        ops["reduce/sum_neg_dim_t"] = x => x[0].Permute(2, 1, 0).Sum(-1);
        ops["reduce/mean_all"] = x => x[0].Mean();
        ops["reduce/mean_dims"] = x => x[0].Mean([0, 1]);
        ops["reduce/mean_dim_keep_t"] = x => T(x[0]).Mean(1, keepDim: true);
        ops["reduce/prod_dim"] = x => x[0].Prod(1);
        ops["reduce/prod_all"] = x => x[0].Prod();
        ops["reduce/max_dim"] = x => x[0].Max(1).values;
        ops["reduce/max_dim_keep"] = x => x[0].Max(0, keepDim: true).values;
        ops["reduce/argmax_dim"] = x => x[0].Max(2).indices;
        ops["reduce/min_dim_t"] = x => T(x[0]).Min(1).values;
        ops["reduce/argmin_dim"] = x => x[0].Min(0).indices;
        ops["reduce/max_all"] = x => x[0].Max();
        ops["reduce/min_all"] = x => x[0].Min();
        ops["reduce/var_dim"] = x => x[0].Var(1);
        ops["reduce/var_dims_biased"] = x => x[0].Var([0, 2], correction: 0);
        ops["reduce/var_all"] = x => x[0].Var();
        ops["reduce/var_keep_t"] = x => T(x[0]).Var(1, keepDim: true);
        ops["reduce/std_dim"] = x => x[0].Std(1);
        ops["reduce/std_all"] = x => x[0].Std();
        ops["reduce/logsumexp"] = x => x[0].LogSumExp(1);
        ops["reduce/logsumexp_keep_large"] = x => x[0].LogSumExp(0, keepDim: true);
        ops["reduce/norm_all"] = x => x[0].Norm();
        ops["reduce/norm_p1_dim"] = x => x[0].Norm(1, 1);
        ops["reduce/norm_p3_dim_keep"] = x => x[0].Norm(3, 0, keepDim: true);
        ops["reduce/cumsum"] = x => x[0].Cumsum(1);
        ops["reduce/cumsum_t"] = x => T(x[0]).Cumsum(0);

        // ---------------- matmul / linear ----------------
        foreach (var s in new[] { "mm", "matvec", "vecmat", "dot", "batched", "bcast_batch", "mat_batch", "batch_vec", "mm_large" })
            ops["matmul/" + s] = x => x[0].Matmul(x[1]);
        ops["matmul/mm_ta"] = x => T(x[0]).Matmul(x[1]);
        ops["matmul/mm_tb"] = x => x[0].Matmul(T(x[1]));
        ops["matmul/mm_tab"] = x => T(x[0]).Matmul(T(x[1]));
        ops["matmul/batched_t"] = x => x[0].Transpose(1, 2).Matmul(x[1].Transpose(0, 1));
        ops["matmul/bmm"] = x => x[0].Bmm(x[1]);
        ops["matmul/outer"] = x => x[0].Outer(x[1]);
        ops["matmul/linear"] = x => Functional.Linear(x[0], x[1], x[2]);
        ops["matmul/linear_nobias"] = x => Functional.Linear(x[0], x[1]);
        ops["matmul/einsum_bij_bjk"] = x => Tensor.Einsum("bij,bjk->bik", x[0], x[1]);
        ops["matmul/einsum_trace_like"] = x => Tensor.Einsum("ij,ji->i", x[0], x[1]);

        // ---------------- convolution, pooling, resizing, padding ----------------
        ops["conv/conv2d"] = x => Functional.Conv2d(x[0], x[1], x[2]);
        ops["conv/conv2d_stride_pad"] = x => Functional.Conv2d(x[0], x[1], x[2], stride: (2, 2), padding: (1, 1));
        ops["conv/conv2d_dilation"] = x => Functional.Conv2d(x[0], x[1], null, dilation: (2, 2), padding: (1, 2));
        ops["conv/conv2d_groups"] = x => Functional.Conv2d(x[0], x[1], x[2], groups: 2);
        ops["conv/conv2d_depthwise"] = x => Functional.Conv2d(x[0], x[1], null, groups: 3, padding: (1, 1));
        ops["conv/conv2d_same"] = x => Functional.Conv2d(x[0], x[1], null, paddingMode: "same");
        ops["conv/conv2d_channels_last"] = x => Functional.Conv2d(x[0].Permute(0, 3, 1, 2), x[1], null, padding: One);
        ops["conv/conv1d"] = x => Functional.Conv1d(x[0], x[1], x[2], stride: 2, padding: 1);
        ops["conv/conv_transpose2d"] = x => Functional.ConvTranspose2d(x[0], x[1], x[2], stride: (2, 2), padding: (1, 1), outputPadding: (1, 1));
        ops["conv/conv_transpose2d_groups"] = x => Functional.ConvTranspose2d(x[0], x[1], null, groups: 2);
        ops["conv/max_pool2d"] = x => Functional.MaxPool2d(x[0], 2);
        ops["conv/max_pool2d_s2p1"] = x => Functional.MaxPool2d(x[0], 3, stride: 2, padding: 1);
        ops["conv/max_pool2d_ceil"] = x => Functional.MaxPool2d(x[0], (2, 2), (2, 2), ceilMode: true);
        ops["conv/max_pool2d_t"] = x => Functional.MaxPool2d(x[0].Transpose(1, 2).Unsqueeze(0), 2);
        ops["conv/avg_pool2d"] = x => Functional.AvgPool2d(x[0], 2);
        ops["conv/avg_pool2d_s2p1"] = x => Functional.AvgPool2d(x[0], 3, stride: 2, padding: 1);
        ops["conv/adaptive_avg_pool2d"] = x => Functional.AdaptiveAvgPool2d(x[0], (3, 2));
        ops["conv/adaptive_avg_pool2d_1"] = x => Functional.AdaptiveAvgPool2d(x[0], (1, 1));
        ops["conv/interp_nearest"] = x => Functional.Interpolate(x[0], size: (6, 7));
        ops["conv/interp_nearest_scale"] = x => Functional.Interpolate(x[0], scaleFactor: 2.0);
        ops["conv/interp_bilinear"] = x => Functional.Interpolate(x[0], size: (5, 7), mode: "bilinear");
        ops["conv/interp_bilinear_ac"] = x => Functional.Interpolate(x[0], size: (5, 7), mode: "bilinear", alignCorners: true);
        ops["conv/interp_bilinear_down"] = x => Functional.Interpolate(x[0], size: (4, 3), mode: "bilinear");
        ops["conv/pad_constant"] = x => Functional.Pad(x[0], [1, 2, 0, 1], value: 0.5);
        ops["conv/pad_crop"] = x => Functional.Pad(x[0], [-1, 2, 1, -1]);
        ops["conv/pad_reflect"] = x => Functional.Pad(x[0], [2, 1, 1, 3], "reflect");
        ops["conv/pad_replicate"] = x => Functional.Pad(x[0], [2, 1, 1, 3], "replicate");

        // ---------------- normalization ----------------
        ops["norm/layer_norm"] = x => Functional.LayerNorm(x[0], [5], x[1], x[2]);
        ops["norm/layer_norm_2d"] = x => Functional.LayerNorm(x[0], [3, 4], x[1], x[2], eps: 1e-3);
        ops["norm/layer_norm_noaffine_t"] = x => Functional.LayerNorm(T(x[0]), [5]);
        ops["norm/batch_norm_train"] = x => Functional.BatchNorm(x[0], null, null, x[1], x[2], training: true);
        ops["norm/batch_norm_train_2d"] = x => Functional.BatchNorm(x[0], null, null, training: true, eps: 1e-3);
        ops["norm/batch_norm_eval"] = x => Functional.BatchNorm(x[0], x[1], x[2], x[3], x[4], training: false);
        ops["norm/group_norm"] = x => Functional.GroupNorm(x[0], 3, x[1], x[2]);
        ops["norm/group_norm_1"] = x => Functional.GroupNorm(x[0], 1);
        ops["norm/rms_norm"] = x => Functional.RmsNorm(x[0], [6], x[1], eps: 1e-6);

        // ---------------- softmax and losses ----------------
        ops["softmax_loss/softmax"] = x => Functional.Softmax(x[0], -1);
        ops["softmax_loss/softmax_dim0"] = x => Functional.Softmax(x[0], 0);
        ops["softmax_loss/softmax_t"] = x => Functional.Softmax(T(x[0]), 1);
        ops["softmax_loss/log_softmax"] = x => Functional.LogSoftmax(x[0], -1);
        ops["softmax_loss/log_softmax_3d"] = x => Functional.LogSoftmax(x[0], 1);
        ops["softmax_loss/cross_entropy"] = x => Losses.CrossEntropy(x[0], x[1]);
        ops["softmax_loss/cross_entropy_weight"] = x => Losses.CrossEntropy(x[0], x[1], weight: x[2]);
        ops["softmax_loss/cross_entropy_ignore"] = x => Losses.CrossEntropy(x[0], x[1]);
        ops["softmax_loss/cross_entropy_smooth"] = x => Losses.CrossEntropy(x[0], x[1], labelSmoothing: 0.1);
        ops["softmax_loss/cross_entropy_smooth_weight"] = x => Losses.CrossEntropy(x[0], x[1], weight: x[2], labelSmoothing: 0.2);
        ops["softmax_loss/cross_entropy_sum"] = x => Losses.CrossEntropy(x[0], x[1], reduction: Reduction.Sum);
        ops["softmax_loss/cross_entropy_none"] = x => Losses.CrossEntropy(x[0], x[1], reduction: Reduction.None);
        ops["softmax_loss/cross_entropy_spatial"] = x => Losses.CrossEntropy(x[0], x[1]);
        ops["softmax_loss/cross_entropy_probs"] = x => Losses.CrossEntropy(x[0], x[1].Div(x[1].Sum(1, keepDim: true)));
        ops["softmax_loss/nll_loss"] = x => Losses.NllLoss(Functional.LogSoftmax(x[0], 1), x[1]);
        ops["softmax_loss/nll_loss_weight_none"] = x => Losses.NllLoss(x[0], x[1], weight: x[2], reduction: Reduction.None);
        ops["softmax_loss/mse"] = x => Losses.MseLoss(x[0], x[1]);
        ops["softmax_loss/mse_sum"] = x => Losses.MseLoss(x[0], x[1], Reduction.Sum);
        ops["softmax_loss/l1"] = x => Losses.L1Loss(x[0], x[1]);
        ops["softmax_loss/l1_none"] = x => Losses.L1Loss(x[0], x[1], Reduction.None);
        ops["softmax_loss/smooth_l1"] = x => Losses.SmoothL1Loss(x[0], x[1], beta: 0.5);
        ops["softmax_loss/huber"] = x => Losses.HuberLoss(x[0], x[1], delta: 0.7);
        ops["softmax_loss/bce"] = x => Losses.BinaryCrossEntropy(x[0], x[1]);
        ops["softmax_loss/bce_weight_sum"] = x => Losses.BinaryCrossEntropy(x[0], x[1], weight: x[2].Expand(3, 4), reduction: Reduction.Sum);
        ops["softmax_loss/bce_logits"] = x => Losses.BinaryCrossEntropyWithLogits(x[0], x[1]);
        ops["softmax_loss/bce_logits_pos_weight"] = x => Losses.BinaryCrossEntropyWithLogits(x[0], x[1], weight: x[2], posWeight: x[3]);
        ops["softmax_loss/kl_div_batchmean"] = x =>
            Losses.KlDiv(Functional.LogSoftmax(x[0], 1), x[1].Div(x[1].Sum(1, keepDim: true)), "batchmean");
        ops["softmax_loss/kl_div_sum_log_target"] = x =>
            Losses.KlDiv(Functional.LogSoftmax(x[0], 1), Functional.LogSoftmax(x[1], 1), "sum", logTarget: true);

        // ---------------- indexing, gather, scatter ----------------
        ops["index/index_select0"] = x => x[0].IndexSelect(0, x[1]);
        ops["index/index_select1_t"] = x => T(x[0]).IndexSelect(1, x[1]);
        ops["index/gather1"] = x => x[0].Gather(1, x[1]);
        ops["index/gather0_3d"] = x => x[0].Gather(0, x[1]);
        ops["index/scatter_add"] = x => x[0].ScatterAdd(1, x[1], x[2]);
        ops["index/scatter_add0"] = x => x[0].ScatterAdd(0, x[1], x[2]);
        ops["index/scatter"] = x => x[0].Scatter(1, x[1], x[2]);
        ops["index/index_add"] = x => x[0].IndexAdd(0, x[1], x[2]);
        ops["index/embedding"] = x => Functional.Embedding(x[0], x[1]);
        ops["index/embedding_padding"] = x => Functional.Embedding(x[0], x[1], paddingIdx: 2);
        ops["index/advanced_index"] = x => x[0].Index(x[1], x[2]);
        ops["index/advanced_index_rows"] = x => x[0].Index(x[1]);
        ops["index/masked_select"] = x => x[0].MaskedSelect(x[1]);
        ops["index/sort_values"] = x => x[0].Sort(1).values;
        ops["index/sort_desc_indices"] = x => x[0].Sort(0, descending: true).indices;
        ops["index/topk_values"] = x => x[0].Topk(3, 1).values;

        // ---------------- views on non-contiguous inputs ----------------
        ops["views/permute_reshape"] = x => x[0].Permute(2, 0, 1).Reshape(4, 6) * 2;
        ops["views/transpose_contiguous"] = x => x[0].Transpose(0, 1).Contiguous().View(2, 6).Exp();
        ops["views/slice_step"] = x => x[0].Slice(0, 1, 6, 2).Slice(1, 0, 7, 3) * 3;
        ops["views/slice_of_t"] = x => T(x[0]).Slice(0, 2, 5).Slice(1, 1, 4).Sin();
        ops["views/narrow_select"] = x => x[0].Narrow(1, 1, 3).Select(2, 1).Tanh();
        ops["views/expand_mul"] = x => x[0].Expand(3, 4) * x[1];
        ops["views/expand_new_dim"] = x => x[0].Expand(2, 3, 4).Sigmoid();
        ops["views/unsqueeze_squeeze"] = x => x[0].Squeeze(1).Unsqueeze(0).Unsqueeze(-1) * 1.5;
        ops["views/flatten_unflatten"] = x => x[0].Transpose(0, 2).Flatten(1).Unflatten(1, 2, 3).Cos();
        ops["views/cat"] = x => Tensor.Cat([x[0], T(x[1]).Slice(0, 0, 2)], 0);
        ops["views/cat_dim1"] = x => Tensor.Cat([x[0], x[1], x[2]], 1);
        ops["views/stack"] = x => Tensor.Stack([x[0], T(x[1])], 1);
        ops["views/split_chunk"] = x => x[0].Split(2, 0)[1].Slice(1, 0, 2) * x[0].Chunk(2, 1)[1].Slice(0, 0, 2);
        ops["views/unbind"] = x => x[0].Unbind(1)[2] - x[0].Unbind(0)[1].Slice(0, 0, 3);
        ops["views/flip"] = x => x[0].Flip(0, 2) * x[0];
        ops["views/mt_matmul"] = x => x[0].Matmul(x[0].Transpose(-2, -1));
        ops["views/view_chain"] = x => x[0].View(2, 2, 6).Permute(1, 2, 0).Slice(1, 1, 5).Reshape(-1);

        // ---------------- edges: exact zeros, boundaries and ties ----------------
        ops["edges/relu_at_0"] = x => x[0].Relu();
        ops["edges/abs_at_0"] = x => x[0].Abs();
        ops["edges/leaky_relu_at_0"] = x => x[0].LeakyRelu(0.2);
        ops["edges/elu_at_0"] = x => x[0].Elu();
        ops["edges/clamp_at_bounds"] = x => x[0].Clamp(-0.5, 0.5);
        ops["edges/hardtanh_at_bounds"] = x => x[0].Hardtanh();
        ops["edges/maximum_ties"] = x => x[0].Maximum(x[1]);
        ops["edges/minimum_ties"] = x => x[0].Minimum(x[1]);
        ops["edges/max_dim_ties"] = x => x[0].Max(1).values;
        ops["edges/argmax_dim_ties"] = x => x[0].Max(1).indices;
        ops["edges/min_dim_ties"] = x => x[0].Min(0).values;
        ops["edges/argmin_dim_ties"] = x => x[0].Min(0).indices;
        ops["edges/max_all_ties"] = x => x[0].Max();
        ops["edges/min_all_ties"] = x => x[0].Min();
        ops["edges/sort_ties"] = x => x[0].Sort(1).values * Tensor.Arange(0, 4, 1, x[0].DType);
        ops["edges/argsort_ties"] = x => x[0].Sort(1).indices;
        ops["edges/max_pool_ties"] = x => Functional.MaxPool2d(x[0], 2);
        ops["edges/l1_zero_diff"] = x => Losses.L1Loss(x[0], x[1], Reduction.Sum);
        ops["edges/smooth_l1_at_beta"] = x => Losses.SmoothL1Loss(x[0], x[1], Reduction.None, beta: 0.5);
        ops["edges/huber_at_delta"] = x => Losses.HuberLoss(x[0], x[1], Reduction.None, delta: 0.5);
        ops["edges/norm_of_zero_row"] = x => x[0].Norm(2, 1);
        ops["edges/sqrt_then_mul_zero"] = x => Tensor.Where(x[0].Gt(0.0), x[0], Tensor.OnesLike(x[0])).Sqrt();
        ops["edges/pow_zero_base"] = x => x[0].Pow(x[1]);
        ops["edges/pow_zero_exponent_scalar"] = x => x[0].Pow(0.0);
        ops["edges/sign"] = x => x[0].Sign() * x[0];
        ops["edges/floor_ceil_round"] = x => x[0].Floor() * 2 + x[0].Ceil() * 3 + x[0].Round() + x[0];
        ops["edges/clone_mul"] = x => x[0].Clone() * x[0];
        ops["edges/to_float64"] = x => x[0].To(DType.Float64) * 2;
        ops["edges/softplus_at_threshold"] = x => x[0].Softplus();
        ops["edges/log_softmax_large"] = x => Functional.LogSoftmax(x[0], 1);
        ops["edges/bce_clamped_log"] = x => Losses.BinaryCrossEntropy(x[0], x[1], reduction: Reduction.None);
        ops["edges/sigmoid_saturated"] = x => x[0].Sigmoid();
        ops["edges/tanh_saturated"] = x => x[0].Tanh();
        ops["edges/exp_overflow"] = x => x[0].Exp();
        ops["edges/cross_entropy_ignore_mean_weighted"] = x => Losses.CrossEntropy(x[0], x[1], weight: x[2]);
        return ops;
    }

    [Fact]
    public void EveryFamilyHasItsFixtureFileWithTorchVersion()
    {
        foreach (var f in Families)
        {
            Assert.True(File.Exists(FixturePath(f)), $"missing fixture {FixturePath(f)}; run tools/fixtures/make_core_fixtures.py");
            var md = Load(f).Metadata;
            Assert.StartsWith("1.13", md["torch_version"]);
            Assert.Equal(f, md["family"]);
        }
    }

    [Fact]
    public void EveryNablaCaseHasAFixtureAndViceVersa()
    {
        var inFiles = Families.SelectMany(f => CaseNames(f).Select(c => $"{f}/{c}")).ToHashSet();
        var stale = Ops.Keys.Where(k => !inFiles.Contains(k)).ToList();
        var missing = inFiles.Where(k => !Ops.ContainsKey(k)).ToList();
        Assert.True(stale.Count == 0, "Nabla cases without a fixture: " + string.Join(", ", stale));
        Assert.True(missing.Count == 0, "fixture cases without a Nabla implementation: " + string.Join(", ", missing));
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void MatchesPyTorch(string family, string name)
    {
        Assert.True(Ops.TryGetValue($"{family}/{name}", out var op), $"no Nabla implementation for fixture case {family}/{name}");
        var t = Load(family).Tensors;
        var inputs = new List<Tensor>();
        while (t.TryGetValue($"{name}.x{inputs.Count}", out var x)) inputs.Add(x);
        bool HasGrad(int i) => t.ContainsKey($"{name}.grad{i}");

        // float32: forward against torch's float32, gradients against torch's float64.
        var x32 = inputs.Select((x, i) => HasGrad(i) ? x.Detach().RequiresGrad_() : x.Detach()).ToArray();
        var out32 = op(x32);
        AssertClose($"{family}/{name} forward float32", t[$"{name}.out"], out32, Rtol32, Atol32);
        if (!t.TryGetValue($"{name}.g", out var g)) return;
        if (x32.Any(x => x.RequiresGrad))
        {
            out32.Backward(g);
            for (int i = 0; i < inputs.Count; i++)
                if (HasGrad(i)) AssertClose($"{family}/{name} grad of x{i} float32", t[$"{name}.grad{i}"], x32[i].Grad ?? Tensor.ZerosLike(x32[i]), Rtol32, Atol32);
        }

        // float64: forward and gradients against torch's float64.
        var x64 = inputs.Select((x, i) =>
        {
            var d = x.DType == DType.Float32 ? x.To(DType.Float64) : x.Detach();
            return HasGrad(i) ? d.RequiresGrad_() : d;
        }).ToArray();
        var out64 = op(x64);
        AssertClose($"{family}/{name} forward float64", t[$"{name}.out64"], out64, Rtol64, Atol64);
        if (x64.Any(x => x.RequiresGrad))
        {
            out64.Backward(g.To(DType.Float64));
            for (int i = 0; i < inputs.Count; i++)
                if (HasGrad(i)) AssertClose($"{family}/{name} grad of x{i} float64", t[$"{name}.grad{i}"], x64[i].Grad ?? Tensor.ZerosLike(x64[i]), Rtol64, Atol64);
        }
    }

    static void AssertClose(string what, Tensor expected, Tensor actual, double rtol, double atol) =>
        TensorAssert.Close(what, expected, actual, rtol, atol);
}
