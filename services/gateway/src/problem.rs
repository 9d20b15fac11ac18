//! Problems as HTTP responses (`application/problem+json`, RFC 9457).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
pub use pathway_bus::Problem;
use pathway_core::envelope::FieldError;

#[derive(Debug)]
pub struct HttpProblem(pub Box<Problem>);

impl From<Problem> for HttpProblem {
    fn from(p: Problem) -> Self {
        HttpProblem(Box::new(p))
    }
}

impl IntoResponse for HttpProblem {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.0).expect("problems serialise");
        let mut res = (status, body).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"pathway-exchange\""),
            );
        }
        res
    }
}

pub fn unauthenticated() -> HttpProblem {
    Problem::new(401, "unauthenticated", "A valid bearer token is required")
        .detail("Send `Authorization: Bearer <token>` with your agency's token.")
        .into()
}

pub fn bad_request(field: &str, message: String) -> HttpProblem {
    Problem::new(400, "malformed-request", "The request could not be read")
        .errors(vec![FieldError::new(field, message)])
        .into()
}

pub fn internal(e: impl std::fmt::Display) -> HttpProblem {
    tracing::error!(error = %e, "internal error");
    Problem::new(500, "internal", "Something went wrong on our side").into()
}
