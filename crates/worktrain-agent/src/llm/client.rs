//! The one HTTP client behind every provider: endpoint, headers, retries, timeouts and
//! streaming are shared; the provider's module supplies only its wire format (headers,
//! request body, response parsing).

use async_trait::async_trait;
use serde_json::Value;

use super::http::{Payload, Transport};
use super::{
    ChatRequest, ChatResponse, LlmClient, LlmConfig, LlmError, Provider, anthropic, openai,
};

/// Client for `POST {base}/v1/messages` (Anthropic) or `POST {base}/v1/chat/completions`
/// (OpenAI-compatible), chosen by the config's provider.
#[derive(Debug)]
pub struct HttpLlmClient {
    config: LlmConfig,
    url: String,
    transport: Transport,
}

impl HttpLlmClient {
    /// Build from a config (resolves the API key now).
    pub fn new(config: LlmConfig) -> Result<Self, LlmError> {
        let (headers, path) = match config.provider {
            Provider::Anthropic => (anthropic::headers(&config)?, anthropic::PATH),
            Provider::OpenAi => (openai::headers(&config)?, openai::PATH),
        };
        let transport = Transport::new(config.retry.clone(), config.timeout, headers)?;
        let url = format!("{}{path}", config.base());
        Ok(Self {
            config,
            url,
            transport,
        })
    }

    /// The request body for `req`, in the provider's wire format.
    pub fn body(&self, req: &ChatRequest) -> Value {
        match self.config.provider {
            Provider::Anthropic => anthropic::body(&self.config, req),
            Provider::OpenAi => openai::body(&self.config, req),
        }
    }
}

#[async_trait]
impl LlmClient for HttpLlmClient {
    fn provider(&self) -> Provider {
        self.config.provider
    }

    fn model(&self) -> &str {
        &self.config.model
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let body = self.body(request);
        let model = self.config.model.clone();
        let provider = self.config.provider;
        let (mut resp, attempts) = self
            .transport
            .post(&self.url, &body, self.config.stream, |p| {
                match (provider, p) {
                    (Provider::Anthropic, Payload::Json(v)) => anthropic::parse_message(&v, &model),
                    (Provider::Anthropic, Payload::Events(evs)) => {
                        anthropic::parse_stream(&evs, &model)
                    }
                    (Provider::OpenAi, Payload::Json(v)) => openai::parse_completion(&v, &model),
                    (Provider::OpenAi, Payload::Events(evs)) => openai::parse_stream(&evs, &model),
                }
            })
            .await?;
        resp.attempts = attempts;
        Ok(resp)
    }
}
