// The `mamba2` and `phi-mamba` students: parity with transformers' Mamba2ForCausalLM on the committed tiny
// checkpoint, both models against independent step-by-step implementations written here (explicit state, one time
// step at a time), taps and the per-head mixing matrix, save → load, gradients, initialization from a teacher's
// weights by role, bad checkpoints and GPU vs CPU.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <fstream>
#include <map>

#include "cab/config/section.h"
#include "cab/io/safetensors.h"
#include "cab/plugin/model.h"
#include "cab/plugin/registry.h"
#include "cab/util/error.h"
#include "test_support.h"

using cab::plugin::Kind;

namespace {

const std::string kFixture = std::string(CAB_TEST_SOURCE_DIR) + "/tests/fixtures/hf/mamba2";

using Params = std::map<std::string, at::Tensor>;

double max_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

Params params_of(const cab::Student& model) {
  Params p;
  for (const auto& item : model.named_parameters()) p[item.key()] = item.value().detach();
  return p;
}

/// Non-trivial values for every 1-D parameter (norms, biases, D, dt_bias, z_bias), so that no check hides behind
/// ones and zeros.
void perturb_vectors(cab::Student& model, double scale = 0.2) {
  at::NoGradGuard no_grad;
  for (auto& p : model.parameters())
    if (p.dim() == 1) p.add_(scale * at::randn_like(p));
}

// ---- independent reference implementations: plain loops over time with an explicit state ----

/// Causal depthwise conv over [b, L, c] with weight [c, 1, K]: out_t = bias + Σ_k w[k] · in_{t−K+1+k}.
at::Tensor causal_conv(const at::Tensor& in, const at::Tensor& w, const at::Tensor& bias) {
  const int64_t L = in.size(1), K = w.size(2);
  at::Tensor out = bias.defined() ? bias.expand_as(in).clone() : at::zeros_like(in);
  for (int64_t t = 0; t < L; ++t)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t src = t - (K - 1) + k;
      if (src >= 0) out.select(1, t).add_(w.select(2, k).squeeze(1) * in.select(1, src));
    }
  return out;
}

/// Multi-head SSM, one step at a time: per head h (group g = h / (H / G)) and channel p,
///   s ← decay[t, h] · s + scale[t, h] · x_t[p] · B_t[g],   y_t[p] = C_t[g] · s
/// x: [b, L, H·P]; decay, scale: [b, L, H]; B, C: [b, L, G·N]. Returns y [b, L, H·P].
at::Tensor ssm_loop(const at::Tensor& x, const at::Tensor& decay, const at::Tensor& scale, const at::Tensor& B,
                    const at::Tensor& C, int64_t groups) {
  const int64_t b = x.size(0), L = x.size(1), H = decay.size(2), P = x.size(2) / H, N = B.size(2) / groups;
  at::Tensor state = at::zeros({b, H, P, N}, x.options());
  at::Tensor y = at::zeros_like(x);
  for (int64_t t = 0; t < L; ++t)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / groups);
      const at::Tensor xt = x.select(1, t).narrow(1, h * P, P);              // [b, P]
      const at::Tensor Bt = B.select(1, t).narrow(1, g * N, N), Ct = C.select(1, t).narrow(1, g * N, N);  // [b, N]
      const at::Tensor dec = decay.select(1, t).select(1, h).view({b, 1, 1}), sc = scale.select(1, t).select(1, h).view({b, 1, 1});
      state.select(1, h).copy_(dec * state.select(1, h) + sc * xt.unsqueeze(2) * Bt.unsqueeze(1));
      y.select(1, t).narrow(1, h * P, P).copy_((state.select(1, h) * Ct.unsqueeze(1)).sum(2));
    }
  return y;
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  return w * x * at::rsqrt(x.pow(2).mean(-1, true) + eps);
}

/// Mamba-2 (transformers' Mamba2ForCausalLM; the gated norm per group, as mamba_ssm) written out step by step.
at::Tensor mamba2_reference(const Params& p, const at::Tensor& ids, int64_t layers, int64_t head_dim, int64_t groups,
                            int64_t d_state, bool tied) {
  const double eps = 1e-5;
  at::Tensor h = p.at("backbone.embeddings.weight").index_select(0, ids.flatten()).view({ids.size(0), ids.size(1), -1});
  for (int64_t l = 0; l < layers; ++l) {
    const std::string m = "backbone.layers." + std::to_string(l) + ".mixer.";
    const at::Tensor hn = rms_norm(h, p.at("backbone.layers." + std::to_string(l) + ".norm.weight"), eps);
    const at::Tensor proj = at::matmul(hn, p.at(m + "in_proj.weight").t());
    const int64_t H = p.at(m + "A_log").size(0), di = H * head_dim, gn = groups * d_state;
    const at::Tensor z = proj.narrow(2, 0, di);
    const at::Tensor xBC = at::silu(causal_conv(proj.narrow(2, di, di + 2 * gn), p.at(m + "conv1d.weight"), p.at(m + "conv1d.bias")));
    const at::Tensor x = xBC.narrow(2, 0, di), B = xBC.narrow(2, di, gn), C = xBC.narrow(2, di + gn, gn);
    const at::Tensor dt = at::softplus(proj.narrow(2, di + di + 2 * gn, H) + p.at(m + "dt_bias"));  // [b, L, H]
    const at::Tensor A = -at::exp(p.at(m + "A_log"));
    at::Tensor y = ssm_loop(x, at::exp(dt * A), dt, B, C, groups) + x * p.at(m + "D").repeat_interleave(head_dim);
    const at::Tensor g = (y * at::silu(z)).view({y.size(0), y.size(1), groups, di / groups});
    y = (g * at::rsqrt(g.pow(2).mean(-1, true) + eps)).view(y.sizes()) * p.at(m + "norm.weight");
    h = h + at::matmul(y, p.at(m + "out_proj.weight").t());
  }
  h = rms_norm(h, p.at("backbone.norm_f.weight"), eps);
  return at::matmul(h, (tied ? p.at("backbone.embeddings.weight") : p.at("lm_head.weight")).t());
}

at::Tensor linear(const Params& p, const std::string& name, const at::Tensor& x) {
  const at::Tensor y = at::matmul(x, p.at(name + ".weight").t());
  return p.count(name + ".bias") ? y + p.at(name + ".bias") : y;
}

at::Tensor layer_norm(const Params& p, const std::string& name, const at::Tensor& x) {
  const at::Tensor mean = x.mean(-1, true), var = (x - mean).pow(2).mean(-1, true);
  return (x - mean) * at::rsqrt(var + 1e-5) * p.at(name + ".weight") + p.at(name + ".bias");
}

/// Phi-Mamba (goombalab/phi-mamba) written out step by step: s ← exp(−Δ) s + x ⊗ B, no division by Δ.
at::Tensor phi_mamba_reference(const Params& p, const at::Tensor& ids, int64_t layers, int64_t n_qk, int64_t n_v,
                               int64_t d_state, bool silu_after_conv) {
  at::Tensor h = p.at("backbone.embedding.weight").index_select(0, ids.flatten()).view({ids.size(0), ids.size(1), -1});
  for (int64_t l = 0; l < layers; ++l) {
    const std::string b = "backbone.layers." + std::to_string(l) + ".", m = b + "mixer.";
    const at::Tensor hn = layer_norm(p, b + "input_layernorm", h);
    const at::Tensor proj = linear(p, m + "in_proj", hn);
    const int64_t di = p.at(m + "out_proj.weight").size(1), qk = n_qk * d_state, cd = di + 2 * qk;
    at::Tensor xBC = causal_conv(proj.narrow(2, 0, cd), p.at(m + "conv1d.weight"), p.at(m + "conv1d.bias"));
    if (silu_after_conv) xBC = at::silu(xBC);
    const at::Tensor x = xBC.narrow(2, 0, di), B = xBC.narrow(2, di, qk), C = xBC.narrow(2, di + qk, qk);
    at::Tensor z = proj.narrow(2, cd, di);
    if (p.count(m + "z_bias")) z = z + p.at(m + "z_bias");
    const at::Tensor dt = at::softplus(proj.narrow(2, cd + di, n_v));
    const at::Tensor y = ssm_loop(x, at::exp(-dt), at::ones_like(dt), B, C, n_qk) + x * p.at(m + "D").repeat_interleave(di / n_v);
    const at::Tensor mixer = linear(p, m + "out_proj", y * at::silu(z));
    const at::Tensor mlp = linear(p, b + "mlp.fc2", at::gelu(linear(p, b + "mlp.fc1", hn), "tanh"));
    h = mixer + mlp + h;
  }
  return linear(p, "lm_head", layer_norm(p, "backbone.final_layernorm", h));
}

class Mamba2Test : public cab::test::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    registry_.discover({CAB_TEST_PLUGIN_DIR});
  }
  std::shared_ptr<cab::Student> make(const std::string& name, cab::config::Section options) {
    return registry_.create_as<cab::Student>(Kind::student, name, options);
  }
  std::shared_ptr<cab::Student> from_fixture() {
    cab::config::Section o;
    o.set("checkpoint", kFixture);
    return make("mamba2", o);
  }
  /// d_model 16, 2 layers, d_inner 32 in 4 heads of 8, N = 4 in 2 groups, vocabulary 40.
  std::shared_ptr<cab::Student> tiny_mamba2(bool tied = false) {
    cab::config::Section o;
    o.set("d_model", std::int64_t{16}).set("n_layer", std::int64_t{2}).set("d_state", std::int64_t{4})
        .set("head_dim", std::int64_t{8}).set("n_groups", std::int64_t{2}).set("vocab_size", std::int64_t{40})
        .set("tie_embeddings", tied);
    return make("mamba2", o);
  }
  /// d_model 16, 2 layers, d_inner 32 with 4 v-heads of 8, 2 qk-heads of N = 4, vocabulary 50 (padded to 56).
  std::shared_ptr<cab::Student> tiny_phi(bool bias = false, const std::string& activation = "identity") {
    cab::config::Section o;
    o.set("d_model", std::int64_t{16}).set("n_layer", std::int64_t{2}).set("d_state", std::int64_t{4})
        .set("n_qk_heads", std::int64_t{2}).set("n_v_heads", std::int64_t{4}).set("expand", std::int64_t{2})
        .set("vocab_size", std::int64_t{50}).set("bias", bias).set("activation", activation);
    return make("phi-mamba", o);
  }
  cab::plugin::Registry registry_;
};

}  // namespace

// ---- mamba2 ----

TEST_F(Mamba2Test, MatchesTransformersLogitsWithin1e4) {
  auto model = from_fixture();
  model->eval();
  cab::io::SafeTensorsFile reference(kFixture + "/reference.safetensors");
  const at::Tensor ids = reference.get("input").clone();
  cab::TapRequest taps;
  taps.add("hidden_out");
  at::NoGradGuard no_grad;
  const auto out = model->forward(ids, taps);
  const at::Tensor want = reference.get("logits");
  ASSERT_EQ(out.logits.sizes(), want.sizes());
  const double diff = max_diff(out.logits, want);
  std::cout << "mamba2 parity: max |Δlogits| = " << diff << "\n";
  EXPECT_LE(diff, 1e-4);
  // transformers' hidden_states: the output of each block, then the final norm's.
  EXPECT_LE(max_diff(out.taps.at({"hidden_out", 0}), reference.get("hidden_states.0")), 1e-5);
  EXPECT_LE(max_diff(out.taps.at({"hidden_out", 1}), reference.get("hidden_states.1")), 1e-5);
}

TEST_F(Mamba2Test, MatchesAStepByStepImplementationWithGroups) {
  // Two groups (the fixture has one) and an untied head, in fp32 and fp64.
  torch::manual_seed(1);
  auto model = tiny_mamba2();
  perturb_vectors(*model);
  const at::Tensor ids = at::randint(0, 40, {2, 9}, at::kLong);
  at::NoGradGuard no_grad;
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    model->to(dtype);
    const double diff = max_diff(model->forward(ids, {}).logits,
                                 mamba2_reference(params_of(*model), ids, 2, 8, 2, 4, false));
    std::cout << "mamba2 vs step-by-step (" << dtype << "): max |Δlogits| = " << diff << "\n";
    EXPECT_LE(diff, dtype == at::kFloat ? 1e-4 : 1e-10);
  }
}

TEST_F(Mamba2Test, TapsHaveTheDocumentedShapes) {
  auto model = from_fixture();  // d_model 32, d_inner 64 = 4 heads of 16, N = 16, one group
  EXPECT_EQ(model->bc_features(), 16);
  const at::Tensor ids = at::randint(0, 96, {2, 7}, at::kLong);
  cab::TapRequest request;
  request.add("B", {1}).add("C", {1}).add("x", {0}).add("delta", {0}).add("mixing_matrix", {1}).add("hidden_out");
  at::NoGradGuard no_grad;
  const auto out = model->forward(ids, request);
  EXPECT_EQ(out.taps.at({"B", 1}).sizes(), (at::IntArrayRef{2, 7, 16}));
  EXPECT_EQ(out.taps.at({"C", 1}).sizes(), (at::IntArrayRef{2, 7, 16}));
  EXPECT_EQ(out.taps.at({"x", 0}).sizes(), (at::IntArrayRef{2, 7, 64}));
  EXPECT_EQ(out.taps.at({"delta", 0}).sizes(), (at::IntArrayRef{2, 7, 4}));
  EXPECT_GT(out.taps.at({"delta", 0}).min().item<double>(), 0.0);  // after softplus
  const at::Tensor M = out.taps.at({"mixing_matrix", 1});
  EXPECT_EQ(M.sizes(), (at::IntArrayRef{2, 4, 7, 7}));
  EXPECT_EQ(M.triu(1).abs().max().item<double>(), 0.0);  // causal
  EXPECT_EQ(out.taps.at({"hidden_out", 1}).sizes(), (at::IntArrayRef{2, 7, 32}));
  EXPECT_FALSE(out.taps.contains({"B", 0}));  // only what was asked for
  EXPECT_FALSE(out.taps.contains({"mixing_matrix", 0}));
  EXPECT_EQ(out.taps.size(), 7u);
  cab::TapRequest bad;
  bad.add("q");
  EXPECT_THROW(model->forward(ids, bad), cab::Error);
}

TEST_F(Mamba2Test, MixingMatrixTimesXIsTheScanOfEachHead) {
  torch::manual_seed(2);
  auto model = tiny_mamba2();
  perturb_vectors(*model);
  model->to(at::kDouble);
  const at::Tensor ids = at::randint(0, 40, {2, 10}, at::kLong);
  cab::TapRequest request;
  request.add("x", {1}).add("B", {1}).add("C", {1}).add("delta", {1}).add("mixing_matrix", {1});
  at::NoGradGuard no_grad;
  const auto out = model->forward(ids, request);
  const at::Tensor x = out.taps.at({"x", 1}), dt = out.taps.at({"delta", 1}), M = out.taps.at({"mixing_matrix", 1});
  const Params p = params_of(*model);
  const at::Tensor A = -at::exp(p.at("backbone.layers.1.mixer.A_log")), D = p.at("backbone.layers.1.mixer.D");
  const at::Tensor y = ssm_loop(x, at::exp(dt * A), dt, out.taps.at({"B", 1}), out.taps.at({"C", 1}), 2) +
                       x * D.repeat_interleave(8);  // [b, L, 32]
  double worst = 0;
  for (int64_t h = 0; h < 4; ++h)
    for (const int64_t ch : {h * 8, h * 8 + 5}) {  // every channel of a head shares its matrix
      const at::Tensor via_matrix = at::matmul(M.select(1, h), x.select(2, ch).unsqueeze(-1)).squeeze(-1);  // [b, L]
      worst = std::max(worst, max_diff(via_matrix, y.select(2, ch)));
    }
  EXPECT_LE(worst, 1e-10);
}

TEST_F(Mamba2Test, SaveLoadRoundTripAndGradients) {
  auto model = from_fixture();
  const auto dir = dir_ / "saved";
  model->save_checkpoint(dir);
  cab::config::Section o;
  o.set("checkpoint", dir.string());
  auto again = make("mamba2", o);
  const at::Tensor ids = at::randint(0, 96, {1, 5}, at::kLong);
  {
    at::NoGradGuard no_grad;
    EXPECT_TRUE(at::equal(model->forward(ids, {}).logits, again->forward(ids, {}).logits));
  }
  const at::Tensor loss = again->forward(ids, {}).logits.square().mean();
  loss.backward();
  for (const auto& p : again->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
  }
  // Tied heads are not saved twice and load back.
  auto tied = tiny_mamba2(true);
  tied->save_checkpoint(dir_ / "tied");
  EXPECT_FALSE(cab::io::SafeTensorsFile(dir_ / "tied" / "model.safetensors").contains("lm_head.weight"));
  o.set("checkpoint", (dir_ / "tied").string());
  auto tied_again = make("mamba2", o);
  at::NoGradGuard no_grad;
  EXPECT_TRUE(at::equal(tied->forward(ids.remainder(40), {}).logits, tied_again->forward(ids.remainder(40), {}).logits));
}

TEST_F(Mamba2Test, InitModesAndPresets) {
  cab::config::Section o;
  o.set("d_model", std::int64_t{32}).set("n_layer", std::int64_t{1}).set("vocab_size", std::int64_t{10})
      .set("head_dim", std::int64_t{16});
  auto s4d = make("mamba2", o);
  const at::Tensor a = s4d->named_parameters()["backbone.layers.0.mixer.A_log"];
  EXPECT_LE(max_diff(at::exp(a), at::arange(1, 5, at::kFloat)), 1e-6);  // A = −[1..H], one scalar per head
  const at::Tensor dt = at::softplus(s4d->named_parameters()["backbone.layers.0.mixer.dt_bias"]);
  EXPECT_GE(dt.min().item<double>(), 1e-3 - 1e-7);
  EXPECT_LE(dt.max().item<double>(), 0.1 + 1e-7);
  o.set("init", std::string("identity"));
  EXPECT_EQ(make("mamba2", o)->named_parameters()["backbone.layers.0.mixer.A_log"].max().item<double>(), -20.0);

  o.set("head_dim", std::int64_t{24});  // d_inner 64 is not a multiple
  try {
    make("mamba2", o);
    ADD_FAILURE();
  } catch (const cab::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("not divisible by head_dim 24"), std::string::npos) << e.what();
  }

  cab::config::Section preset;
  preset.set("preset", std::string("mamba2-130m"));
  auto m130 = make("mamba2", preset);
  EXPECT_EQ(m130->shape().d_model, 768);
  EXPECT_EQ(m130->shape().num_layers, 24);
  EXPECT_EQ(m130->d_state(), 128);
  EXPECT_EQ(m130->d_inner(), 1536);
  int64_t params = 0;
  for (const auto& p : m130->parameters()) params += p.numel();
  EXPECT_NEAR(params / 1e6, 129.0, 0.1);  // state-spaces/mamba2-130m: 128.99 M with the tied head
}

TEST_F(Mamba2Test, BadCheckpointsAreClearErrors) {
  auto copy_fixture = [&](const std::string& name, const std::string& from, const std::string& to) {
    const auto dir = dir_ / name;
    std::filesystem::create_directories(dir);
    std::ifstream src(kFixture + "/config.json");
    std::string text((std::istreambuf_iterator<char>(src)), std::istreambuf_iterator<char>());
    text.replace(text.find(from), from.size(), to);
    std::ofstream(dir / "config.json") << text;
    std::filesystem::copy_file(kFixture + "/model.safetensors", dir / "model.safetensors");
    cab::config::Section o;
    o.set("checkpoint", dir.string());
    return o;
  };
  // A checkpoint whose shapes disagree with its config.json: N = 8 makes in_proj 64 + 80 + 4 rows, not 164.
  try {
    make("mamba2", copy_fixture("state", "\"state_size\": 16", "\"state_size\": 8"));
    ADD_FAILURE();
  } catch (const cab::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("backbone.layers.0.mixer.in_proj.weight: expected [148, 32], got [164, 32]"), std::string::npos) << m;
  }
  try {
    make("mamba2", copy_fixture("heads", "\"num_heads\": 4", "\"num_heads\": 3"));
    ADD_FAILURE();
  } catch (const cab::Error& e) {
    EXPECT_NE(std::string(e.what()).find("config.json': num_heads 3"), std::string::npos) << e.what();
  }
  cab::config::Section o;
  o.set("checkpoint", (dir_ / "nowhere").string());
  EXPECT_THROW(make("mamba2", o), cab::Error);
}

TEST_F(Mamba2Test, InitFromTeacherCopiesRolesIntoInProjSlices) {
  torch::manual_seed(3);
  auto model = tiny_mamba2();  // in_proj rows: z 32, x 32, B 8, C 8, dt 4
  cab::RoleWeights teacher;
  for (int l = 0; l < 3; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    for (const char* r : {"q", "k", "v", "o"}) teacher[p + "attn." + r + ".weight"] = at::randn({16, 16});
    teacher[p + "attn.q.bias"] = at::randn({16});
    teacher[p + "norm1.weight"] = at::randn({16});
  }
  teacher["embed.tokens"] = at::randn({40, 16});
  teacher["head.weight"] = at::randn({40, 16});
  const auto report = model->init_from_teacher(teacher, {0, 2});
  Params p = params_of(*model);
  const at::Tensor w = p.at("backbone.layers.1.mixer.in_proj.weight");
  EXPECT_TRUE(at::equal(w.narrow(0, 32, 16), teacher["layers.2.attn.v.weight"]));  // x rows (leading 16 of 32)
  EXPECT_TRUE(at::equal(w.narrow(0, 64, 8), teacher["layers.2.attn.k.weight"].narrow(0, 0, 8)));  // B: 8 of 16 rows
  EXPECT_TRUE(at::equal(w.narrow(0, 72, 8), teacher["layers.2.attn.q.weight"].narrow(0, 0, 8)));  // C
  EXPECT_TRUE(at::equal(p.at("backbone.layers.0.mixer.out_proj.weight").narrow(1, 0, 16), teacher["layers.0.attn.o.weight"]));
  EXPECT_TRUE(at::equal(p.at("backbone.layers.1.norm.weight"), teacher["layers.2.norm1.weight"]));
  EXPECT_TRUE(at::equal(p.at("backbone.embeddings.weight"), teacher["embed.tokens"]));
  EXPECT_TRUE(at::equal(p.at("lm_head.weight"), teacher["head.weight"]));
  EXPECT_EQ(report.partial.size(), 8u) << report.str();  // x, B, C, out_proj of both layers
  const std::string text = report.str();
  EXPECT_NE(text.find("layers.0.attn.q.bias (backbone.layers.0.mixer.in_proj has no bias)"), std::string::npos) << text;
  EXPECT_NE(text.find("norm_f.weight"), std::string::npos) << text;  // the teacher has none
  EXPECT_THROW(model->init_from_teacher(teacher, {0}), cab::Error);
  at::NoGradGuard no_grad;
  EXPECT_TRUE(model->forward(at::randint(0, 40, {1, 6}, at::kLong), {}).logits.isfinite().all().item<bool>());
}

// ---- phi-mamba ----

TEST_F(Mamba2Test, PhiMambaMatchesAStepByStepImplementation) {
  for (const bool bias : {false, true}) {
    torch::manual_seed(4);
    auto model = tiny_phi(bias, bias ? "silu" : "identity");
    EXPECT_EQ(model->named_parameters().contains("backbone.layers.0.mixer.z_bias"), !bias);
    perturb_vectors(*model);
    const at::Tensor ids = at::randint(0, 56, {2, 11}, at::kLong);
    at::NoGradGuard no_grad;
    for (const auto dtype : {at::kFloat, at::kDouble}) {
      model->to(dtype);
      const at::Tensor got = model->forward(ids, {}).logits;
      ASSERT_EQ(got.sizes(), (at::IntArrayRef{2, 11, 56}));
      const double diff = max_diff(got, phi_mamba_reference(params_of(*model), ids, 2, 2, 4, 4, bias));
      std::cout << "phi-mamba (bias " << bias << ") vs step-by-step (" << dtype << "): max |Δlogits| = " << diff << "\n";
      EXPECT_LE(diff, dtype == at::kFloat ? 1e-4 : 1e-10);
    }
  }
}

TEST_F(Mamba2Test, PhiMambaTapsAndMixingMatrix) {
  torch::manual_seed(5);
  auto model = tiny_phi();
  perturb_vectors(*model);
  model->to(at::kDouble);
  EXPECT_EQ(model->bc_features(), 8);  // 2 qk heads of N = 4
  const at::Tensor ids = at::randint(0, 56, {2, 9}, at::kLong);
  cab::TapRequest request;
  request.add("x", {0}).add("B", {0}).add("C", {0}).add("delta", {0}).add("mixing_matrix", {0}).add("hidden_in", {1});
  at::NoGradGuard no_grad;
  const auto out = model->forward(ids, request);
  const at::Tensor x = out.taps.at({"x", 0}), dt = out.taps.at({"delta", 0}), M = out.taps.at({"mixing_matrix", 0});
  EXPECT_EQ(x.sizes(), (at::IntArrayRef{2, 9, 32}));
  EXPECT_EQ(out.taps.at({"B", 0}).sizes(), (at::IntArrayRef{2, 9, 8}));
  EXPECT_EQ(dt.sizes(), (at::IntArrayRef{2, 9, 4}));
  EXPECT_EQ(M.sizes(), (at::IntArrayRef{2, 4, 9, 9}));
  EXPECT_EQ(out.taps.at({"hidden_in", 1}).sizes(), (at::IntArrayRef{2, 9, 16}));
  EXPECT_EQ(out.taps.size(), 6u);
  // y = M · x per head, against the recurrence s ← exp(−Δ) s + x ⊗ B, plus D · x.
  const at::Tensor D = params_of(*model).at("backbone.layers.0.mixer.D");
  const at::Tensor y = ssm_loop(x, at::exp(-dt), at::ones_like(dt), out.taps.at({"B", 0}), out.taps.at({"C", 0}), 2) +
                       x * D.repeat_interleave(8);
  double worst = 0;
  for (int64_t h = 0; h < 4; ++h)
    for (const int64_t ch : {h * 8, h * 8 + 7}) {
      const at::Tensor via_matrix = at::matmul(M.select(1, h), x.select(2, ch).unsqueeze(-1)).squeeze(-1);
      worst = std::max(worst, max_diff(via_matrix, y.select(2, ch)));
    }
  EXPECT_LE(worst, 1e-10);
  // MOHAWK's transfer matrix: the diagonal is C_t · B_t + D.
  const at::Tensor Bh = out.taps.at({"B", 0}).narrow(2, 4, 4), Ch = out.taps.at({"C", 0}).narrow(2, 4, 4);  // head 3: group 1
  EXPECT_LE(max_diff(M.select(1, 3).diagonal(0, -2, -1), (Bh * Ch).sum(-1) + D[3]), 1e-12);
}

TEST_F(Mamba2Test, PhiMambaSaveLoadGradientsAndBadCheckpoints) {
  torch::manual_seed(6);
  auto model = tiny_phi();
  perturb_vectors(*model);
  const auto dir = dir_ / "phi";
  model->save_checkpoint(dir);
  cab::config::Section o;
  o.set("checkpoint", dir.string());
  auto again = make("phi-mamba", o);
  const at::Tensor ids = at::randint(0, 56, {2, 6}, at::kLong);
  {
    at::NoGradGuard no_grad;
    EXPECT_TRUE(at::equal(model->forward(ids, {}).logits, again->forward(ids, {}).logits));
  }
  const at::Tensor loss = again->forward(ids, {}).logits.square().mean();
  loss.backward();
  for (const auto& p : again->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
  }

  // The repository's config.json layout; a config that disagrees with the weights names the tensor.
  std::ifstream src(dir / "config.json");
  std::string text((std::istreambuf_iterator<char>(src)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("\"CoreType\": \"modules.mixers.discrete_mamba2\""), std::string::npos) << text;
  const std::string from = "\"d_state\": 4";
  ASSERT_NE(text.find(from), std::string::npos) << text;
  text.replace(text.find(from), from.size(), "\"d_state\": 8");
  std::ofstream(dir / "config.json") << text;
  try {
    make("phi-mamba", o);
    ADD_FAILURE();
  } catch (const cab::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("backbone.layers.0.mixer.in_proj.weight: expected [100, 16], got [84, 16]"), std::string::npos) << m;
  }
  std::ofstream(dir / "config.json") << "{\"MixerModel\": {}}";
  EXPECT_THROW(make("phi-mamba", o), cab::Error);

  cab::config::Section bad;
  bad.set("n_qk_heads", std::int64_t{3});
  EXPECT_THROW(make("phi-mamba", bad), cab::ConfigError);  // 4 v-heads are not a multiple of 3 qk-heads
}

TEST_F(Mamba2Test, PhiMambaInitFromTeacher) {
  // A Phi-shaped teacher: width 16 = 2 heads of 8, MLP 64, vocabulary 56, 3 layers. The student matches it exactly:
  // d_inner 16, 2 qk heads of N = 8 (B, C ← K, Q), 2 v heads (x ← V).
  torch::manual_seed(7);
  cab::config::Section o;
  o.set("d_model", std::int64_t{16}).set("n_layer", std::int64_t{2}).set("d_state", std::int64_t{8})
      .set("n_qk_heads", std::int64_t{2}).set("n_v_heads", std::int64_t{2}).set("vocab_size", std::int64_t{56})
      .set("init", std::string("from-teacher"));
  auto model = make("phi-mamba", o);
  cab::RoleWeights teacher;
  for (int l = 0; l < 3; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    for (const char* r : {"q", "k", "v", "o"}) {
      teacher[p + "attn." + r + ".weight"] = at::randn({16, 16});
      teacher[p + "attn." + r + ".bias"] = at::randn({16});
    }
    teacher[p + "norm1.weight"] = at::randn({16});
    teacher[p + "norm1.bias"] = at::randn({16});
    teacher[p + "mlp.fc1.weight"] = at::randn({64, 16});
    teacher[p + "mlp.fc1.bias"] = at::randn({64});
    teacher[p + "mlp.fc2.weight"] = at::randn({16, 64});
    teacher[p + "mlp.fc2.bias"] = at::randn({16});
  }
  teacher["embed.tokens"] = at::randn({56, 16});
  teacher["norm_f.weight"] = at::randn({16});
  teacher["norm_f.bias"] = at::randn({16});
  teacher["head.weight"] = at::randn({56, 16});
  teacher["head.bias"] = at::randn({56});
  const auto report = model->init_from_teacher(teacher, {1, 2});
  EXPECT_TRUE(report.partial.empty()) << report.str();
  // Per layer x, B, C, out_proj.weight, norm weight + bias, fc1 and fc2 weight + bias; then 5 global tensors.
  EXPECT_EQ(report.copied.size(), 2u * 10 + 5) << report.str();
  EXPECT_EQ(report.skipped.size(), 2u * 4) << report.str();  // q/k/v/o biases: this student has no in/out bias
  const Params p = params_of(*model);
  for (int l = 0; l < 2; ++l) {
    const std::string s = "backbone.layers." + std::to_string(l) + ".", t = "layers." + std::to_string(l + 1) + ".";
    const at::Tensor w = p.at(s + "mixer.in_proj.weight");  // rows: x 16, B 16, C 16, z 16, A_log 2
    EXPECT_TRUE(at::equal(w.narrow(0, 0, 16), teacher[t + "attn.v.weight"])) << l;
    EXPECT_TRUE(at::equal(w.narrow(0, 16, 16), teacher[t + "attn.k.weight"])) << l;
    EXPECT_TRUE(at::equal(w.narrow(0, 32, 16), teacher[t + "attn.q.weight"])) << l;
    EXPECT_TRUE(at::equal(p.at(s + "mixer.out_proj.weight"), teacher[t + "attn.o.weight"])) << l;
    EXPECT_TRUE(at::equal(p.at(s + "input_layernorm.bias"), teacher[t + "norm1.bias"])) << l;
    EXPECT_TRUE(at::equal(p.at(s + "mlp.fc1.weight"), teacher[t + "mlp.fc1.weight"])) << l;
    EXPECT_TRUE(at::equal(p.at(s + "mlp.fc2.bias"), teacher[t + "mlp.fc2.bias"])) << l;
  }
  EXPECT_TRUE(at::equal(p.at("backbone.embedding.weight"), teacher["embed.tokens"]));
  EXPECT_TRUE(at::equal(p.at("backbone.final_layernorm.weight"), teacher["norm_f.weight"]));
  EXPECT_TRUE(at::equal(p.at("lm_head.bias"), teacher["head.bias"]));
  EXPECT_THROW(model->init_from_teacher(teacher, {0, 1, 2}), cab::Error);
}

// ---- both ----

TEST_F(Mamba2Test, GpuForwardMatchesCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(8);
  const std::vector<std::pair<std::string, std::shared_ptr<cab::Student>>> models = {{"mamba2", from_fixture()},
                                                                                      {"phi-mamba", tiny_phi(false)}};
  for (const auto& [name, model] : models) {
    perturb_vectors(*model, 0.05);
    const at::Tensor ids = at::randint(0, 56, {2, 12}, at::kLong);
    cab::TapRequest taps;
    taps.add("mixing_matrix", {1});
    at::NoGradGuard no_grad;
    const auto cpu = model->forward(ids, taps);
    model->to(at::kCUDA);
    const auto gpu = model->forward(ids.cuda(), taps);  // the CUDA scan kernel runs here
    EXPECT_LE(max_diff(gpu.logits.cpu(), cpu.logits), 1e-4) << name;
    EXPECT_LE(max_diff(gpu.taps.at({"mixing_matrix", 1}).cpu(), cpu.taps.at({"mixing_matrix", 1})), 1e-4) << name;
    model->to(at::kBFloat16);
    const at::Tensor bf16 = model->forward(ids.cuda(), {}).logits.cpu().to(at::kFloat);
    EXPECT_LE(((bf16 - cpu.logits).abs().max() / cpu.logits.abs().max()).item<double>(), 5e-2) << name;
  }
}
