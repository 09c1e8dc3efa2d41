namespace Nabla.Autograd;

/// <summary>One differentiable primitive: its name as recorded in the graph and the golden fixture case that checks it.</summary>
/// <param name="Name">the op name passed to Tensor.Record (shown as grad_fn)</param>
/// <param name="Fixture">"family/case" in tests/fixtures/core whose forward or gradient runs this primitive</param>
public sealed record PrimitiveOp(string Name, string Fixture);

/// <summary>
/// Every primitive that records a gradient rule. Recording an op missing here throws, and the registry test checks
/// each entry's CPU kernel, gradient rule (finite differences) and fixture case: adding an op means adding it here.
/// Composite ops (softmax, layer_norm, gelu, losses, ...) are built from these and are not listed.
/// </summary>
public static class OpRegistry
{
    public static readonly PrimitiveOp[] Primitives =
    [
        // elementwise
        new("add", "binary/add_row_col"), new("sub", "binary/sub_row_col"), new("mul", "binary/mul_row_col"), new("div", "binary/div_row_col"),
        new("pow", "binary/pow_same"), new("maximum", "binary/maximum_same"), new("minimum", "binary/minimum_same"), new("where", "binary/where"),
        new("neg", "unary/neg"), new("exp", "unary/exp"), new("log", "unary/log"), new("log1p", "unary/log1p"), new("expm1", "unary/expm1"),
        new("sqrt", "unary/sqrt"), new("abs", "unary/abs"), new("sin", "unary/sin"), new("cos", "unary/cos"), new("tanh", "unary/tanh"),
        new("sigmoid", "unary/sigmoid"), new("relu", "unary/relu"), new("relu_backward", "unary/relu"), new("erf", "unary/erf"),
        new("floor", "edges/floor_ceil_round"), new("ceil", "edges/floor_ceil_round"), new("round", "edges/floor_ceil_round"),
        new("to", "edges/to_float64"),
        // reductions
        new("sum", "reduce/sum_dim"), new("prod", "reduce/prod_dim"), new("max", "reduce/max_dim"), new("min", "reduce/min_dim_t"),
        new("cumsum", "reduce/cumsum"),
        // views and copies
        new("reshape", "views/permute_reshape"), new("view", "views/view_chain"), new("unsqueeze", "views/unsqueeze_squeeze"),
        new("squeeze", "views/unsqueeze_squeeze"), new("permute", "views/permute_reshape"), new("expand", "views/expand_mul"),
        new("slice", "views/slice_step"), new("slice_backward", "views/slice_step"), new("contiguous", "views/transpose_contiguous"),
        new("clone", "edges/clone_mul"), new("cat", "views/cat"),
        // indexing
        new("index_select", "index/index_select0"), new("index_add", "index/index_add"), new("gather", "index/gather1"),
        new("scatter_add", "index/scatter_add"), new("scatter", "index/scatter"),
        // linear algebra and neural-network kernels
        new("matmul", "matmul/mm"), new("conv2d", "conv/conv2d"), new("unfold", "conv/conv2d"), new("fold", "conv/conv_transpose2d"),
        new("max_pool2d", "conv/max_pool2d"), new("max_pool2d_backward", "conv/max_pool2d"), new("max_pool2d_gather", "conv/max_pool2d"),
        new("batch_norm", "norm/batch_norm_train"), new("constant_pad", "conv/pad_constant"),
    ];

    static readonly HashSet<string> Names = new(Primitives.Select(p => p.Name));

    public static bool IsRegistered(string op) => Names.Contains(op);
}
