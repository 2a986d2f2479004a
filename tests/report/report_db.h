// Test databases for cab-report, written through the Store API the way cab-sweep's host writes them:
// freeze the sweep (runs pending), then claim each run, begin its attempt, stream metrics and finish or end it.
#pragma once

#include <gtest/gtest.h>
#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "cab/store/store.h"
#include "cab/sweep/expand.h"

namespace cab::test {

struct FakeRun {
  sweep::Params params;
  store::Status status = store::Status::finished;
  std::map<std::string, std::string> summary;
  std::vector<std::tuple<std::string, std::int64_t, double>> metrics;  ///< key, step, value
  std::string error;
};

/// Records a sweep holding `runs` (in this order); returns its id. Pending runs are never claimed; running ones
/// are claimed and left running.
inline std::int64_t record_sweep(store::Store& store, const std::string& name, const std::vector<FakeRun>& runs) {
  sweep::SweepFile file;
  file.name = name;
  file.path = name + ".toml";
  file.text = "# test sweep " + name;
  file.sha256 = "sha-" + name;
  std::vector<sweep::RunSpec> specs(runs.size());
  for (std::size_t i = 0; i < runs.size(); ++i) {
    specs[i].position = static_cast<std::int64_t>(i);
    specs[i].params = runs[i].params;
    specs[i].config_hash = fmt::format("{}-{:04}", name, i);
  }
  const auto sweep_id = store.freeze_sweep(file, specs, false).sweep_id;
  const auto records = store.runs(sweep_id);
  std::set<std::int64_t> skip;
  for (std::size_t i = 0; i < runs.size(); ++i)
    if (runs[i].status == store::Status::pending) skip.insert(records[i].id);
  for (std::size_t i = 0; i < runs.size(); ++i) {
    if (runs[i].status == store::Status::pending) continue;
    const auto claimed = store.claim_next(sweep_id, "testhost:1", "0", skip);
    EXPECT_TRUE(claimed && claimed->id == records[i].id);
    const auto id = records[i].id;
    store.begin_attempt(id);
    std::vector<store::Metric> metrics;
    for (const auto& [key, step, value] : runs[i].metrics) metrics.push_back({id, key, step, value, 0.01 * step});
    store.add_metrics(metrics);
    switch (runs[i].status) {
      case store::Status::finished: store.finish(id, runs[i].summary); break;
      case store::Status::failed:
      case store::Status::killed: store.end(id, runs[i].status, runs[i].error, 1); break;
      default: break;  // running: left as claimed
    }
  }
  return sweep_id;
}

/// A distillation run's parameters, as a resolved config would flatten them (with unrelated keys that are
/// equal across runs, so the "runs differ" check has something to ignore).
inline sweep::Params distill_params(const std::string& method, double fraction, std::int64_t seed,
                                    const std::string& student = "vim") {
  sweep::Params p;
  p["method.name"] = method;
  p["train.data_fraction"] = fraction;
  p["run.seed"] = seed;
  p["run.device"] = std::string("cpu");
  p["teacher.name"] = std::string("vit");
  p["student.name"] = student;
  p["student.init"] = std::string("identity");
  p["alignment.name"] = std::string("cab-bc");
  p["alignment.terms"] = std::string("B+C");
  p["alignment.shared_bridge"] = false;
  p["alignment.align_grad_to_student"] = true;
  p["dataset.name"] = std::string("fashion-mnist");
  p["train.steps"] = std::int64_t{150};
  p["train.batch_size"] = std::int64_t{64};
  p["train.lr"] = 2e-3;
  if (method == "cab") p["method.lambda_schedule"] = std::string("constant");
  return p;
}

/// A finished run's summary and learning curve, as the trainer reports them.
inline FakeRun finished_run(sweep::Params params, double top1, int steps = 20) {
  FakeRun r;
  r.params = std::move(params);
  r.summary = {{"top1", fmt::format("{:.4f}", top1)},
               {"best_top1", fmt::format("{:.4f}", top1 + 0.5)},
               {"final_loss", "0.5"},
               {"steps", std::to_string(steps)},
               {"wall_s", "36.000"},
               {"ms_per_step", "12.500"},
               {"examples_per_s", "5120.0"},
               {"attn_similarity", "0.4000"},
               {"checkpoint", "/tmp/run/model"}};
  for (int s = 0; s < steps; ++s) {
    r.metrics.emplace_back("loss", s, 2.3 * std::exp(-0.1 * s) + 0.01 * (top1 / 100));
    r.metrics.emplace_back("lr", s, 1e-3);
  }
  for (int l = 0; l < 4; ++l) r.metrics.emplace_back("attn_similarity", l, 0.2 + 0.1 * l + top1 / 1000);
  r.metrics.emplace_back("eval/top1", steps, top1);
  return r;
}

/// A database with something for every shipped table and figure: a Table 3 sweep (3 methods × 4 data
/// fractions × 2 seeds around the paper's DeiT-T→Vim-T numbers, a pending MOHAWK run, a failed run), a Table 5
/// ablation sweep and a Table 4 language-model sweep.
inline void write_demo_database(const std::filesystem::path& db) {
  store::Store store(db);
  const std::map<std::string, std::vector<double>> paper = {{"vanilla", {11.2, 15.3, 27.4, 29.2}},
                                                            {"soft-kd", {20.4, 23.3, 37.0, 41.1}},
                                                            {"cab", {27.8, 27.3, 45.4, 46.0}}};
  const std::map<std::string, double> memory = {{"vanilla", 1800}, {"soft-kd", 2100}, {"cab", 2300}},
                                      ms = {{"vanilla", 41}, {"soft-kd", 52}, {"cab", 60}};
  const double fractions[] = {0.01, 0.05, 0.1, 0.2};
  std::vector<FakeRun> runs;
  for (const char* method : {"vanilla", "soft-kd", "cab"})
    for (int f = 0; f < 4; ++f)
      for (std::int64_t seed : {0, 1}) {
        auto run = finished_run(distill_params(method, fractions[f], seed), paper.at(method)[f] + (seed ? 0.4 : -0.4));
        run.summary["peak_memory_mb"] = fmt::format("{:.1f}", memory.at(method) + 10 * seed);
        run.summary["ms_per_step"] = fmt::format("{:.3f}", ms.at(method) + seed);
        for (auto& [key, step, value] : run.metrics)
          if (key == "attn_similarity" && std::string(method) == "cab") value += 0.3;
        runs.push_back(run);
      }
  FakeRun pending;
  pending.params = distill_params("mohawk", 0.01, 0);
  pending.status = store::Status::pending;
  runs.push_back(pending);
  FakeRun failed;
  failed.params = distill_params("soft-kd", 0.2, 2);
  failed.status = store::Status::failed;
  failed.error = "CUDA out of memory: tried to allocate 2.00 GiB (log: results/logs/fmnist-distill/26.log)";
  runs.push_back(failed);
  record_sweep(store, "fmnist-distill", runs);

  std::vector<FakeRun> ablation;
  auto variant = [&](const std::string& method, const std::string& terms, bool shared, const std::string& init,
                     double top1) {
    for (std::int64_t seed : {0, 1}) {
      auto p = distill_params(method, 0.05, seed);
      p["alignment.terms"] = terms;
      p["alignment.shared_bridge"] = shared;
      p["student.init"] = init;
      ablation.push_back(finished_run(p, top1 + (seed ? 0.3 : -0.3)));
    }
  };
  variant("vanilla", "B+C", false, "identity", 15.3);
  variant("soft-kd", "B+C", false, "identity", 23.3);
  variant("cab", "B", false, "identity", 24.9);
  variant("cab", "C", false, "identity", 25.6);
  variant("cab", "B+C", true, "identity", 26.1);
  variant("cab", "B+C", false, "s4d", 22.0);
  variant("cab", "B+C", false, "identity", 27.3);
  record_sweep(store, "fmnist-ablation", ablation);

  std::vector<FakeRun> lm;
  for (const char* method : {"vanilla", "soft-kd", "cab"})
    for (const char* corpus : {"/usr/share/doc/python3.11-doc", "/usr/share/doc/linux-doc-6.1"})
      for (std::int64_t steps : {2000, 8000}) {
        auto p = distill_params(method, 1.0, 0, "mamba");
        p["teacher.name"] = std::string("llama");
        p["dataset.name"] = std::string("text-corpus");
        p["dataset.root"] = std::string(corpus);
        p["dataset.seq_len"] = std::int64_t{256};
        p["train.steps"] = steps;
        auto run = finished_run(p, 0);
        run.summary.erase("top1");
        const double base = std::string(method) == "cab" ? 18 : std::string(method) == "soft-kd" ? 24 : 35;
        run.summary["ppl"] = fmt::format("{:.4f}", base * (steps == 2000 ? 1.3 : 1.0) + (std::string(corpus).find("python") != std::string::npos ? 2 : 0));
        lm.push_back(run);
      }
  record_sweep(store, "lm-table4", lm);
}

}  // namespace cab::test
